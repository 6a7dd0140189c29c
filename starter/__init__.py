"""Start and steer node lifecycles from other services: ``ControlPlane`` plus ``connect``."""

from starter.api import ControlPlane, NodeStarted, NotFound
from starter.connection import connect
from starter.feed import EventStream

__all__ = ["ControlPlane", "EventStream", "NodeStarted", "NotFound", "connect"]
