"""A SkyPilot 0.14.1 API server simulator: the real REST contract, simulated clusters, faults.

``SimulatorServer`` runs it in-process (tests, demos, benchmarks); ``skypilot-sim`` runs it as a
process; ``create_app`` gives the bare ASGI app.
"""

from devtools.skypilot_sim.app import create_app
from devtools.skypilot_sim.config import Faults, SimConfig
from devtools.skypilot_sim.server import SimulatorServer

__all__ = ["Faults", "SimConfig", "SimulatorServer", "create_app"]
