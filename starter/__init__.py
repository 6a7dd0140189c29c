"""Start and steer node lifecycles from other services: ``ControlPlane`` plus ``connect``."""

from starter.api import ControlPlane, NodeStarted, NotFound
from starter.connection import connect

__all__ = ["ControlPlane", "NodeStarted", "NotFound", "connect"]
