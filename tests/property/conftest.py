"""The integration stack (dev server, simulator, database, in-process worker) for the Temporal CLI
property, borrowed from tests/integration/conftest.py rather than copied."""

from tests.integration.conftest import (  # noqa: F401  (fixtures, found by name)
    Stack,
    simulator,
    sky_shim,
    stack,
    stack_database,
    worker,
)
