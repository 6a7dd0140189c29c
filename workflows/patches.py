"""Patch bundles: one marker for every patch a new run takes, instead of one per patch.

Each ``workflow.patched`` id a run takes costs a marker event and, on servers since 1.20, an
upsert of the ``TemporalChangeVersion`` search attribute (a visibility write). A node's
lifecycle took seven, which was a fixed cost in every node's history, paid again on every
continue-as-new. A bundle names a set of patch ids. A run that records the bundle's marker
takes all of them without a marker each.

Replay stays deterministic with any mix of histories:
- a history with the newest bundle's marker replays with every id it names taken;
- a history with an older bundle's marker takes that bundle's ids, and asks ``workflow.patched``
  for any id added since (False on replay: its marker is not there);
- a history from before any bundle has no bundle marker, so every id is asked for one by one,
  exactly as before the bundles.

The bundle is decided once per run, at the run's first patch check. A run that began before
the bundles and is continued by newer code has already asked, during its replay, and keeps
asking id by id.

An id is never removed from a bundle, and a bundle's set never changes once released.
A new patch goes into a NEW bundle (newest first in ``NODE_BUNDLES``): an old bundle's marker
must not stand for a path its code did not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from temporalio import workflow


@dataclass(frozen=True)
class Bundle:
    marker: str
    ids: frozenset[str]


class PatchBundles:
    """``patched(id)`` for one run, over bundles newest first."""

    def __init__(self, bundles: Sequence[Bundle]) -> None:
        self._bundles = bundles
        self._taken: frozenset[str] | None = None

    def patched(self, patch_id: str) -> bool:
        if self._taken is None:
            self._taken = next(
                (b.ids for b in self._bundles if workflow.patched(b.marker)), frozenset()
            )
        return patch_id in self._taken or workflow.patched(patch_id)
