"""Settings that must stop start-up: the ConfigError and what its message has to say."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from controlplane.config import ConfigError, load_settings


def refused(env: Mapping[str, str], *expected: str) -> str:
    """``load_settings(env)`` raises ConfigError whose message contains every one of
    ``expected`` (the variable's name, the reason); the message is returned for more checks."""
    with pytest.raises(ConfigError) as caught:
        load_settings(dict(env))
    message = str(caught.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    return message
