"""Repository errors a caller can act on; messages name ids and statuses, never data."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError

# What talking to the database can raise: SQLAlchemy wraps the driver's errors, except that
# an unreachable server surfaces as OSError (ConnectionRefusedError, socket.gaierror, ...).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)


class RepositoryError(Exception):
    """Base of the errors below."""


class NodeNotFound(RepositoryError, LookupError):
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        super().__init__(f"node {node_id} has no row (record its intent first)")


class InvalidTransition(RepositoryError):
    """The node's current status does not allow the wanted change; nothing was written."""

    def __init__(self, node_id: str, current: str, wanted: str, allowed: Iterable[str]) -> None:
        self.node_id = node_id
        self.current = current
        self.wanted = wanted
        self.allowed = frozenset(allowed)
        super().__init__(
            f"node {node_id} is {current!r}, cannot move to {wanted!r} "
            f"(allowed from: {', '.join(sorted(self.allowed)) or 'nothing'})"
        )


class DedupeKeyConflict(RepositoryError):
    """The event's dedupe key belongs to an earlier, different change; nothing was written."""

    def __init__(self, node_id: str, dedupe_key: str, wanted: str) -> None:
        self.node_id = node_id
        self.dedupe_key = dedupe_key
        super().__init__(
            f"node {node_id}: event dedupe key {dedupe_key!r} was already used by an earlier "
            f"change, so moving to {wanted!r} would leave no event; pass a dedupe_key unique "
            "to this change (e.g. with a generation or attempt suffix)"
        )


class ClusterNameConflict(RepositoryError):
    def __init__(self, node_id: str, cluster_name: str) -> None:
        self.node_id = node_id
        self.cluster_name = cluster_name
        super().__init__(
            f"cluster name {cluster_name!r} already belongs to a node other than {node_id}"
        )


def summarize_database_error(error: BaseException) -> str:
    """One line for a person: the driver's message, without SQLAlchemy's SQL and links.

    Driver messages name hosts, databases and users, never passwords or bound values.
    """
    orig = getattr(error, "orig", None)
    if orig is not None:
        error = orig.__cause__ or orig
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no details'}"
