"""The README's main command, as a person runs it: the local stack on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_a_whole_lifecycle_on_embedded_defaults(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYPILOT_", "TEMPORAL_", "DATABASE_URL"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "starter.demo", "--exit"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in (
        "Postgres (embedded) ready",
        "status: launching",
        "status: running",
        "terminate answered: terminated",
        "workflow finished: node terminated",
        "outbox: node.terminated",
        "launch requests for the cluster = 1",
        "live clusters = []",
        "stack stopped",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    assert "/namespaces/default/workflows/node-" in out  # the web UI address is printed
