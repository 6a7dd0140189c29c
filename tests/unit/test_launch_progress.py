"""Phases from SkyPilot's launch log, as the REST stream and the CLI print it."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from controlplane.launch_progress import (
    MAX_PROGRESS_CHARS,
    NodePhase,
    PhaseTracker,
    classify,
    clean_line,
)
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.task import SkyTask


def test_skypilot_lines_name_their_phase() -> None:
    assert classify("\x1b[1m⚙︎ Launching on AWS us-east-1 (us-east-1a).\x1b[0m") == (
        NodePhase.PROVISIONING,
        "Launching on AWS us-east-1 (us-east-1a).",
    )
    assert classify("└── Instance is up.") == (NodePhase.PROVISIONING, "Instance is up.")
    assert classify("⚙︎ Running setup on 1 VM.") == (NodePhase.SETTING_UP, "Running setup on 1 VM.")
    completed = classify("✓ Setup completed.  View logs: sky logs --setup c")
    assert completed is not None
    assert completed[0] is NodePhase.LOADING_MODEL
    assert classify("⚙︎ Job submitted, ID: 3") == (NodePhase.LOADING_MODEL, "Job submitted, ID: 3")


def test_a_tasks_own_output_is_never_progress() -> None:
    for line in ("export HF_TOKEN=hf_abc", "Setup: installing vLLM…", "", "-----", "Launching"):
        assert classify(line) is None, line


def test_the_tracker_only_moves_forward() -> None:
    tracker = PhaseTracker()
    assert tracker.feed("Waiting for 'sky.launch' request to be scheduled: x") is None
    first = tracker.feed("⚙︎ Launching on GCP us-central1 (us-central1-a).")
    assert first is not None
    assert first.phase is NodePhase.PROVISIONING
    assert tracker.feed("└── Instance is up.") is None  # same phase: nothing new to say
    assert tracker.feed("⚙︎ Syncing files.") is not None
    assert tracker.feed("⚙︎ Launching on AWS us-east-1 (us-east-1a).") is None  # backwards
    restated = tracker.advance(NodePhase.SETTING_UP, "still setting up")
    assert restated is not None
    assert tracker.advance(NodePhase.PROVISIONING, "back") is None


def test_lines_are_cut_to_a_readable_length() -> None:
    assert len(clean_line("Launching on " + "x" * 5000)) == MAX_PROGRESS_CHARS


async def test_cli_launch_hands_each_output_line_on_with_secrets_replaced(tmp_path: Path) -> None:
    secret = "hf_SuperSecretToken0123456789"
    sky = tmp_path / "sky"
    sky.write_text(
        "#!/bin/sh\n"
        "echo '⚙︎ Launching on AWS us-east-1 (us-east-1a).'\n"
        f"echo 'token {secret} printed by a careless setup'\n"
        "printf 'Job submitted, ID: 1'\n"  # no final newline
    )
    sky.chmod(0o755)
    cli = SkyCLI(str(sky), launch_timeout=30, terminate_timeout=30, status_timeout=30)
    lines: list[str] = []
    task = SkyTask(
        name="t", document={"name": "t", "run": "echo"}, secrets={"HF": SecretStr(secret)}
    )
    await cli.launch("c1", task, on_line=lines.append)
    assert lines[0] == "⚙︎ Launching on AWS us-east-1 (us-east-1a)."
    assert lines[1] == "token *** printed by a careless setup"
    assert lines[2:] == ["Job submitted, ID: 1"]
    assert all(secret not in line for line in lines)
