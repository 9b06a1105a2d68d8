"""The watcher's notes on files it does not hand on: each logged once, listed for status, kept across restarts.

A file that waits (a writer holds it open, it cannot be looked at) or is left
alone for good (a name that is not taken, a folder) is logged once, with why
and what to do. The names already logged are kept in a state file, so a
restart or a reload does not log them again (at most NOTED_MAX), and
left_alone() lists those left alone for good (for `reverser status`). A name
that is renamed or removed is forgotten, and logged again if it comes back.
"""

from __future__ import annotations

import heapq
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

from loguru import logger

from ...core.names import why_left_alone

NOTED_MAX = 10_000   # names kept as already logged 'left alone' (a bound on the state file)


@dataclass(frozen=True)
class Note:
    """A file logged once: why, what to do, since when (time.time()); ignored: left alone for good, not
    waiting for something (a writer to close it). Read back from the state file, why is "" until a scan."""

    why: str = ""
    fix: str = ""
    since: float = 0.0
    ignored: bool = False


class LeftAlone:
    """The notes of one watcher; changed by its tracker thread, read by left_alone() from any thread."""

    def __init__(self, noted_file: Path | None, expect: str, rename: Callable[[str], str] | None,
                 subfolders: Collection[str]):
        """expect, rename, subfolders: as the Watcher's, for the reasons and fixes of names that are not taken."""
        self._file = noted_file
        self.expect, self.rename, self.subfolders = expect, rename, set(subfolders)
        self._noted: dict[Path, Note] = self._load()   # logged once: left alone, or waited for
        self._saved = set(self._noted)
        self._lock = threading.Lock()   # the tracker changes _noted; left_alone() reads it elsewhere
        self._listed: tuple | None = None     # left_alone()'s last answer, until _noted changes
        self.scanning = False   # a scan saves once at its end, not once per name

    def note(self, path: Path, why: str, fix: str = "", ignored: bool = False) -> None:
        """Log why path waits or is left alone, once; a name read back from the state file, logged at an earlier
        start, gets its reason here without a second line."""
        old = self._noted.get(path)
        if old is not None and old.why:
            return
        with self._lock:
            self._noted[path] = Note(why, fix, old.since if old else time.time(), ignored)
            self._listed = None
        if old is None:
            logger.info("{}: {}", path, f"left alone: {why}; {fix}" if ignored else why)
            if not self.scanning:
                self.save()

    def odd(self, path: Path, is_dir: bool) -> None:
        """A name that is not taken: say so once (a sub-folder that belongs there, silently not)."""
        if not is_dir:
            self.note(path, *why_left_alone(path.name, self.expect, self.rename), ignored=True)
        elif path.name not in self.subfolders and not path.name.startswith("."):
            self.note(path, f"a folder; only files directly in {path.parent} are taken",
                      f"move its files up into {path.parent}", ignored=True)

    def forget(self, path: Path) -> None:
        """path was renamed, removed or handed on: no longer noted (and logged again if it comes back)."""
        if path in self._noted:
            with self._lock:
                self._noted.pop(path, None)
                self._listed = None

    def keep_only(self, present: Collection[Path]) -> None:
        """After a scan: forget the names no longer there (one that comes back later is logged again), and save."""
        gone = [p for p in self._noted if p not in present]
        if gone:
            with self._lock:
                for p in gone:
                    del self._noted[p]
                self._listed = None
        self.save()

    def left_alone(self, limit: int) -> tuple[dict[Path, int], list[tuple[Path, Note]]]:
        """Files left alone for good: how many per folder, and the newest limit of them per folder, newest
        first (a folder of 100,000 wrong names costs one pass here each time that list changes, not more)."""
        with self._lock:
            if self._listed is not None and self._listed[0] == limit:
                return self._listed[1], self._listed[2]
            notes = [(p, n) for p, n in self._noted.items() if n.ignored]
        by_folder: dict[Path, list] = {}
        for p, n in notes:
            by_folder.setdefault(p.parent, []).append((p, n))
        counts = {folder: len(mine) for folder, mine in by_folder.items()}
        listed = [t for mine in by_folder.values()
                  for t in heapq.nlargest(limit, mine, key=lambda t: (t[1].since, t[0].name))]
        with self._lock:
            self._listed = (limit, counts, listed)
        return counts, listed

    def _load(self) -> dict[Path, Note]:
        """The names logged at earlier starts: {path: since} (a list of paths, as kept before, reads too)."""
        try:
            kept = json.loads(self._file.read_text(encoding="utf-8", errors="surrogateescape"))
            if isinstance(kept, list):
                kept = dict.fromkeys(kept, time.time())
            return {Path(p): Note(since=float(t)) for p, t in kept.items()}
        except (AttributeError, OSError, ValueError, TypeError):
            return {}   # none kept yet, or unreadable: names are logged once more, nothing worse

    def save(self) -> None:
        """Write the names logged so far to the state file, if they changed since the last save."""
        if self._file is None or self._noted.keys() == self._saved:
            return
        keep = dict(sorted((str(p), n.since) for p, n in self._noted.items())[:NOTED_MAX])
        tmp = self._file.with_name(f".{self._file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(keep), encoding="utf-8", errors="surrogateescape")
            os.replace(tmp, self._file)
            self._saved = set(self._noted)
        except OSError as e:   # a full or read-only state disk: the names may be logged again, no more
            logger.debug("{}: cannot keep the names logged as left alone: {}", self._file, e)
