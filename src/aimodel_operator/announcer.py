"""What the operator says about an AIModel in Events: the children it changed, and problems
as they appear and as they end (remembered across a rollout, so the end is said too)."""

from __future__ import annotations

import logging
from typing import Any

from . import conditions
from .logs import fields
from .objects import Key, Manifest
from .recorder import Recorder

log = logging.getLogger(__name__)


class Announcer:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        # Per AIModel, the condition types whose problem its status has shown since they were last good.
        self.troubled: dict[Key, frozenset[str]] = {}

    def forget(self, key: Key) -> None:
        self.troubled.pop(key, None)

    def changed(self, model: Manifest, applied: list[Manifest], removed: list[str]) -> None:
        parts = []
        if applied:
            parts.append("applied " + ", ".join(f"{c['kind']} {c['metadata']['name']}" for c in applied))
        if removed:
            parts.append("deleted " + ", ".join(removed))
        message = "; ".join(parts)
        meta = model["metadata"]
        log.info("reconciled", extra=fields(namespace=meta["namespace"], name=meta["name"], did=message))
        self.recorder.event(model, "Normal", "Reconciled", message[:1].upper() + message[1:])

    def written(self, key: Key, model: Manifest, new: dict[str, Any]) -> None:
        """The status ``new`` replaced the model's: say what began or ended."""
        troubled = self.troubled.get(key, frozenset())
        for note in conditions.announcements(model.get("status") or {}, new, troubled):
            self.recorder.event(model, note.type, note.reason, note.message)
        troubled = conditions.troubles(new, troubled)
        if troubled:
            self.troubled[key] = troubled
        else:
            self.troubled.pop(key, None)
