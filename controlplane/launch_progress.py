"""Where a launching node stands: its phase, read from SkyPilot's launch log line by line.

The same classification serves both front doors: the REST API's request log (``/api/stream``)
and the ``sky launch`` CLI's output. Only lines SkyPilot itself writes are recognised (its
optimizer, provisioner, setup and job-submission lines); a task's own output is never taken as
progress, so nothing a setup script prints can travel further than the log it was printed to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_PROGRESS_CHARS = 200


class NodePhase(StrEnum):
    """The steps a node goes through, in order; a phase never moves backwards during a launch."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    PROVISIONING = "provisioning"
    SETTING_UP = "setting_up"
    LOADING_MODEL = "loading_model"
    READY = "ready"
    TERMINATING = "terminating"

    @property
    def rank(self) -> int:
        return list(NodePhase).index(self)


# SkyPilot's own launch-log lines (sky/execution.py, sky/provision/provisioner.py,
# sky/backends/cloud_vm_ray_backend.py), first match wins.
_RULES: tuple[tuple[re.Pattern[str], NodePhase], ...] = (
    (re.compile(r"^Waiting for 'sky\.launch' request to be scheduled"), NodePhase.SUBMITTING),
    (re.compile(r"^Launching on "), NodePhase.PROVISIONING),
    (re.compile(r"^(Instance is up|Cluster launched)"), NodePhase.PROVISIONING),
    (re.compile(r"^(Syncing files|Running setup)"), NodePhase.SETTING_UP),
    (re.compile(r"^(Setup completed|Job submitted|Job started)"), NodePhase.LOADING_MODEL),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# Spinner and tree glyphs SkyPilot prefixes its status lines with (⚙︎, ✓, └──, ├──, ...).
_GLYPHS = re.compile(r"^[\s\u2500-\u257f\u2699\ufe0e\ufe0f\u2713\u2714\u2717\u00b7•*-]+")


def clean_line(raw: str) -> str:
    """A log line without colour codes, padding or leading glyphs, cut to a readable length."""
    line = _GLYPHS.sub("", _ANSI.sub("", raw)).strip()
    return line[:MAX_PROGRESS_CHARS]


def classify(raw: str) -> tuple[NodePhase, str] | None:
    """The phase a SkyPilot log line announces, with the cleaned line; None for other lines."""
    line = clean_line(raw)
    for pattern, phase in _RULES:
        if pattern.search(line):
            return phase, line
    return None


@dataclass(frozen=True)
class Progress:
    phase: NodePhase
    line: str


class PhaseTracker:
    """Feed it log lines; it answers a Progress only when the phase moves forward."""

    def __init__(self, phase: NodePhase = NodePhase.SUBMITTING) -> None:
        self.phase = phase

    def feed(self, raw: str) -> Progress | None:
        found = classify(raw)
        if found is None or found[0].rank <= self.phase.rank:
            return None
        self.phase = found[0]
        return Progress(found[0], found[1])

    def advance(self, phase: NodePhase, line: str) -> Progress | None:
        """Move to ``phase`` (or restate it) for a reason known outside the log (model loading)."""
        if phase.rank < self.phase.rank:
            return None
        self.phase = phase
        return Progress(phase, clean_line(line))
