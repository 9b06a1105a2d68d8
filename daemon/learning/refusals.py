"""The training files a queue's intake refused, kept for `reverser status` and the Training page.

Every refusal is counted; the latest REFUSED_KEPT are kept with their reasons
in <state>/pairs/<queue>/refused.json (a full disk keeps them in memory only).
One deleted or retried from the failed folder is no longer listed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from loguru import logger

from ..core.fs import now_iso, write_json
from ..core.names import shown

REFUSED = "refused.json"
REFUSED_KEPT = 20   # refusals kept with their reasons for `reverser status` (all are counted)


class Refusals:
    """One queue's refusals; thread-safe, and never waits for the intake's own lock."""

    def __init__(self, dest: Path, failed: Path):
        self.dest, self.failed = dest, failed
        self._lock = threading.Lock()
        self._kept = self._load()   # {"count": N, "recent": [...]}, newest first

    def _load(self) -> dict:
        try:
            kept = json.loads((self.dest / REFUSED).read_text(encoding="utf-8"))
            return {"count": int(kept["count"]), "recent": list(kept["recent"])[:REFUSED_KEPT]}
        except (OSError, ValueError, TypeError, KeyError):
            return {"count": 0, "recent": []}

    def note(self, path: Path, dst: Path, reason: str) -> None:
        """path was refused into dst (its name in the failed folder) for reason."""
        entry = {"name": shown(path.name), "reason": shown(reason), "when": now_iso(),
                 "moved_to": shown(dst), "file": dst.name}
        with self._lock:
            self._kept = {"count": self._kept["count"] + 1,
                          "recent": [entry] + self._kept["recent"][:REFUSED_KEPT - 1]}
            try:
                self.dest.mkdir(parents=True, exist_ok=True)
                write_json(self.dest / REFUSED, self._kept)
            except OSError as e:
                logger.debug("cannot write {}: {}", self.dest / REFUSED, e)

    def listing(self) -> tuple[int, list[dict], int]:
        """How many of the latest (up to REFUSED_KEPT) are still in the failed folder, those, newest first, each
        with its reason; and how many were refused before those, counted apart as they are not named."""
        with self._lock:
            count, recent = self._kept["count"], list(self._kept["recent"])
        still = [{k: e[k] for k in ("name", "reason", "when", "moved_to")} for e in recent
                 if os.path.lexists(self.failed / e.get("file", ""))]
        return len(still), still, max(0, count - len(recent))
