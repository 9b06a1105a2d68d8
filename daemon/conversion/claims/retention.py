"""Retention of processed inputs: <state>/done/ pruned by age and by size, off by default.

[output] done_keep_days removes inputs processed longer ago than that, and
done_max_mb then removes the oldest of the rest until done/ fits. A file's
age is its modification time, which the spool sets to the time it was
processed as it moves into done/ (a scan from 2019 processed today is a day
old, not five years). The sweep runs at start-up and every SWEEP_SECONDS on
a thread of its own, looks only at files directly in done/<queue>/ (never
into failed/, which a user must see, never through a link, never at hidden
names being written), and logs one line per sweep that removed something.
A listing and one stat per file: 100,000 kept inputs cost well under a second
an hour.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

SWEEP_SECONDS = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class Kept:
    """One processed input in done/."""

    path: Path
    mtime: float    # when it was processed
    size: int       # bytes


def select(files: list[Kept], now: float, keep_days: float, max_bytes: float) -> list[Kept]:
    """The files to remove, oldest first: those older than keep_days (0: none for age), then the oldest of
    the rest while they total more than max_bytes (0: no cap)."""
    rest = sorted(files, key=lambda f: (f.mtime, str(f.path)))
    gone: list[Kept] = []
    if keep_days > 0:
        cutoff = now - keep_days * DAY
        gone = [f for f in rest if f.mtime < cutoff]
        rest = rest[len(gone):]
    if max_bytes > 0:
        total = sum(f.size for f in rest)
        for f in rest:
            if total <= max_bytes:
                break
            gone.append(f)
            total -= f.size
    return gone


def kept_inputs(done_root: Path) -> list[Kept]:
    """The regular files directly in each done/<queue>/ folder (not hidden, not through links)."""
    found = []
    try:
        queues = [e for e in os.scandir(done_root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for q in queues:
        try:
            entries = list(os.scandir(q.path))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(Kept(Path(e.path), st.st_mtime, st.st_size))
    return found


def sweep(done_root: Path, keep_days: float, max_mb: float, now: float | None = None,
          stopping: threading.Event | None = None) -> tuple[int, int, int, int]:
    """Remove what select() picks; return (files removed, bytes removed, files kept, bytes kept)."""
    files = kept_inputs(done_root)
    gone = select(files, time.time() if now is None else now, keep_days, max_mb * 1e6)
    n = size = 0
    for f in gone:
        if stopping is not None and stopping.is_set():
            break
        try:
            os.unlink(f.path)
        except FileNotFoundError:
            continue
        except OSError as e:
            logger.warning("done/: cannot remove {}: {}", f.path, e.strerror or e)
            continue
        n, size = n + 1, size + f.size
    return n, size, len(files) - n, sum(f.size for f in files) - size


class DoneSweeper:
    """Sweeps done/ at start and then every SWEEP_SECONDS, on its own thread, while retention is on."""

    def __init__(self, done_root: Path, keep_days: float, max_mb: float, every: float = SWEEP_SECONDS):
        self.root, self.keep_days, self.max_mb, self.every = Path(done_root), keep_days, max_mb, every
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def on(self) -> bool:
        return self.keep_days > 0 or self.max_mb > 0

    def start(self) -> "DoneSweeper":
        if self.on:
            self._thread = threading.Thread(target=self._run, name="done-sweep", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        first = True
        while not self._stopping.is_set():
            try:
                n, size, kept, kept_size = sweep(self.root, self.keep_days, self.max_mb, stopping=self._stopping)
            except Exception:   # a bug must not end the sweeps, nor the service
                logger.exception("done/: the sweep failed; it runs again in {:g} s", self.every)
            else:
                log = logger.info if n or first else logger.debug
                log("done/: removed {} processed input(s), {} ({}); {} kept, {}", n, _mb(size), self._rule(),
                    kept, _mb(kept_size))
            first = False
            self._stopping.wait(self.every)

    def _rule(self) -> str:
        rules = ([f"older than done_keep_days = {self.keep_days:g}"] if self.keep_days > 0 else []) + \
                ([f"over done_max_mb = {self.max_mb:g}"] if self.max_mb > 0 else [])
        return " or ".join(rules)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
