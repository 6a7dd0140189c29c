"""A SkyPilot 0.14.1 API server simulator: the real REST contract, simulated clusters, faults.

``SimulatorServer`` runs it in-process (tests, demos, benchmarks); ``skypilot-sim`` runs it as a
process; ``create_app`` gives the bare ASGI app.
"""

from controlplane.skypilot.sim.app import create_app
from controlplane.skypilot.sim.config import Faults, SimConfig
from controlplane.skypilot.sim.server import SimulatorServer

__all__ = ["Faults", "SimConfig", "SimulatorServer", "create_app"]
