"""Watching folders for complete files: one watchdog observer, a tracker thread, handler threads.

A created event fires when a copy starts, so a file is handed on only when it
is complete: at its close-after-write event where inotify gives one, else (and
always for the polling observer) once its size and mtime have not changed for
the settle time, and then only once no process holds it open for writing
(core/openfiles.py, which says which writers it can see). A file renamed into
a folder (the safe way to deliver) is complete at once. A file put back by its
handler to be finished (hold()) waits to be unchanged for longer, whatever its
events say. Names that writers use for partial files are never handed
on; other names the caller does not accept are left alone and logged once,
with what to do, and left_alone() lists them (for `reverser status`;
leftalone.py keeps these notes).

A start-up scan finds files dropped while nobody watched (a backlog, handed on
oldest first), and a reconcile scan every `rescan` seconds finds what events
missed (inotify overflows silently in watchdog). An observer that stopped (a
watched folder was removed, which ends its inotify watch) is started again
as soon as the folder exists again, followed by a scan.

Reusable: the service watches inbox/<queue>/ for NAME_before.<image ext>; the
pairs intake can watch inbox/<queue>/train/ with its own filter and handler:

    w = Watcher({folder: handler}, accept=lambda name: ..., settle=1.0, rescan=30, observer="auto")
    w.start(); ...; w.stop()

handler(arrival) runs on one of the watcher's threads, never on the observer's,
so a slow handler never delays events. Each path is handed to one handler call
at a time. A file the handler leaves in place is offered again at a later
reconcile scan, which is how a handler can wait for something (a pair's other
half). Folders are watched non-recursively; symlinks and other non-regular
entries are handed on at once (the handler decides: the service quarantines
them), directories never.
"""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping

from loguru import logger
from watchdog.events import FileMovedEvent

from ...core.names import is_partial
from ...core.openfiles import open_for_writing
from .leftalone import LeftAlone, Note
from .observers import KINDS, start_observer, stop_observer, watching


@dataclass(frozen=True)
class Arrival:
    """A complete file, as handed to a handler."""

    path: Path
    at: float       # time.monotonic() when it was found complete: the start of its latency
    how: str        # closed | renamed | settled | special (not a regular file)


Handler = Callable[[Arrival], None]
REARM_SECONDS = 0.5   # how often the tracker looks whether the observer still watches
LOOK_EVERY = 0.2      # the shortest pause between two scans of /proc for writers (about 15 ms each)


def _mtime(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        return 0


@dataclass
class _Track:
    """A file seen but not yet complete."""

    size: int
    mtime_ns: int
    changed: float          # monotonic time size or mtime last changed (or first seen)
    writing: bool = False   # inotify saw it opened or written and not closed yet


class Watcher:
    """Hand each complete file that appears in some folders to that folder's handler."""

    def __init__(self, folders: Mapping[Path, Handler], accept: Callable[[str], bool], *,
                 settle: float = 1.0, rescan: float = 30.0, observer: str = "auto", poll: float = 1.0,
                 threads: int = 2, label: str = "watcher", expect: str = "an accepted name",
                 rename: Callable[[str], str] | None = None,
                 subfolders: Collection[str] = (), noted_file: Path | None = None):
        """noted_file: where the names already logged as left alone are kept, so a restart or a reload
        does not log them again (at most leftalone.NOTED_MAX). subfolders: names of sub-folders that belong in
        folders (train/); others are noted in the log once, as files with other names are, since files in
        them are not converted. rename(name): the name an image file should have to be taken, for the fix."""
        if observer not in ("auto", "inotify", "polling"):
            raise ValueError(f"observer must be auto, inotify or polling, got {observer!r}")
        self.folders = {Path(os.path.abspath(f)): h for f, h in folders.items()}
        self.accept, self.settle, self.rescan = accept, settle, rescan
        self.kind, self.poll, self.label, self.expect, self.rename = observer, poll, label, expect, rename
        self.close_events = False   # True while the observer reports close-after-write (inotify)
        self._msgs: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[Path, _Track] = {}
        self._due: list[tuple[float, int, Path]] = []   # heap of (when to look again, tie-break, path)
        self._seq = itertools.count()
        self._inflight: set[Path] = set()   # handed on, handler not finished
        self._again: set[Path] = set()      # changed while in flight: look again when the handler returns
        self._noted = LeftAlone(noted_file, expect, rename, subfolders)   # logged once: left alone, or waited for
        self._held: dict[Path, float] = {}  # put back to finish: handed on once unchanged this long (hold())
        self._looked = -LOOK_EVERY          # monotonic time of the last /proc scan for writers
        self._observer = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._n_handlers = threads

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg, folders: Mapping[Path, Handler], accept, *, label: str, **how) -> "Watcher":
        """A watcher with [watch]'s settings, its notes on files left alone kept in <state>/left-alone-LABEL.json."""
        w = cfg.watch
        return cls(folders, accept, settle=w.settle_seconds, rescan=w.rescan_seconds, observer=w.observer,
                   poll=w.poll_seconds, label=label, noted_file=cfg.paths.state / f"left-alone-{label}.json", **how)

    def start(self) -> None:
        """Create the folders, start the observer, then scan (so nothing dropped in between is missed)."""
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        self._start_observer()
        self._threads = [threading.Thread(target=self._track, name=f"{self.label}-tracker", daemon=True)]
        self._threads += [threading.Thread(target=self._serve, name=f"{self.label}-handler-{i}", daemon=True)
                          for i in range(self._n_handlers)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; files not yet handed on stay where they are. Waits for running handlers."""
        self._stopping.set()
        self._msgs.put(("stop", None))
        for _ in range(self._n_handlers):
            self._ready.put(None)
        self._stop_observer()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def rescan_now(self) -> None:
        """Ask for a reconcile scan at once (the tracker runs it)."""
        self._msgs.put(("scan", None))

    def hold(self, path: Path, seconds: float) -> None:
        """The next time path arrives, hand it on only once unchanged for seconds, whatever its events say:
        a file put back into its folder to finish (its writer appends in steps, each closing it)."""
        self._msgs.put(("hold", (Path(os.path.abspath(path)), seconds)))

    @property
    def observer_alive(self) -> bool:
        return watching(self._observer, len(self.folders))

    # -- observer ---------------------------------------------------------------------------

    def _start_observer(self) -> None:
        self._observer, self.close_events = start_observer(self.kind, self.poll, self.folders, self._msgs.put,
                                                           self.label)

    def _stop_observer(self) -> None:
        obs, self._observer = self._observer, None
        stop_observer(obs)

    def _rearm(self) -> bool:
        """An observer that stopped (its folder was removed: inotify ends that watch) is started again as soon
        as every folder exists again; True when it was, so that a scan follows at once."""
        if self.observer_alive or self._stopping.is_set() or not all(f.is_dir() for f in self.folders):
            return False
        self._ensure_observer()
        return True

    def _ensure_observer(self) -> None:
        if self.observer_alive or self._stopping.is_set():
            return
        logger.warning("{}: the file-system observer had stopped; restarting it", self.label)
        self._stop_observer()
        try:
            self._start_observer()
        except OSError as e:
            logger.error("{}: cannot restart the observer ({}); scanning every {:g} s meanwhile",
                         self.label, e, self.rescan)

    # -- tracker: events and timers in, complete paths out ------------------------------------

    def _track(self) -> None:
        next_scan = 0.0  # the start-up scan runs first thing
        next_look = 0.0  # the observer's health, looked at often: a removed folder ends its watch
        while True:
            now = time.monotonic()
            if now >= next_look:
                if self._rearm():
                    next_scan = 0.0
                next_look = now + REARM_SECONDS
            if now >= next_scan:
                self._reconcile()
                next_scan = time.monotonic() + self.rescan
            self._check_due(time.monotonic())
            wake = min(next_scan, next_look, self._due[0][0] if self._due else next_scan)
            try:
                kind, obj = self._msgs.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                continue
            if kind == "stop":
                return
            if kind == "event":
                self._on_event(obj)
            elif kind == "done":
                self._on_done(obj)
            elif kind == "scan":
                next_scan = 0.0
            elif kind == "hold":
                self._held[obj[0]] = obj[1]

    def _on_event(self, event) -> None:
        if isinstance(event, FileMovedEvent):
            if event.src_path:
                self._on_path("deleted", Path(os.fsdecode(event.src_path)))
            if event.dest_path:
                self._on_path("renamed", Path(os.fsdecode(event.dest_path)))
        elif type(event) in KINDS:
            self._on_path(KINDS[type(event)], Path(os.fsdecode(event.src_path)))

    def _on_path(self, kind: str, path: Path) -> None:
        if path.parent not in self.folders or is_partial(path.name):
            return
        if not self.accept(path.name):
            # A sub-folder such as train/ is someone else's business (inotify reports its opening).
            if kind != "deleted":
                self._noted.odd(path, path.is_dir())
            else:
                self._noted.forget(path)   # renamed or removed: no longer left alone (and logged again if back)
            return
        if kind == "deleted":
            self._pending.pop(path, None)
            return
        if path in self._inflight:
            if kind not in ("opened", "closed-nowrite"):  # the handler reading it is no change to look at
                self._again.add(path)
            return
        if self.close_events and kind in ("closed", "renamed") and path not in self._held:
            self._pending.pop(path, None)
            # Events can lag behind: a scan may have found this file settled and
            # handed it on already. Only a file still there is handed on.
            if os.path.lexists(path) and not os.path.isdir(path):
                self._hand_on(path, kind)
            return
        track = self._pending.get(path)
        if track is None:
            track = self._begin(path)
            if track is None:
                return
        track.changed = time.monotonic()
        if self.close_events:
            if kind in ("opened", "modified"):
                track.writing = True
            elif kind == "closed-nowrite":
                track.writing = False  # a reader closed it; a writer would show up again by writing

    def _begin(self, path: Path) -> _Track | None:
        """Start tracking path; None (and handled) when it is gone, a folder, or needs no waiting."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._noted.note(path, f"cannot look at it ({e}); will try again at the next scan")
            return None
        if stat.S_ISDIR(st.st_mode):
            self._noted.note(path, "a folder, not a file", "put the image file itself here", ignored=True)
            return None
        if not stat.S_ISREG(st.st_mode):
            self._hand_on(path, "special")  # a symlink, FIFO or device: nothing to wait for
            return None
        now = time.monotonic()
        track = self._pending[path] = _Track(st.st_size, st.st_mtime_ns, now)
        heapq.heappush(self._due, (now + self._held.get(path, self.settle), next(self._seq), path))
        return track

    def _check_due(self, now: float) -> None:
        ready = []
        while self._due and self._due[0][0] <= now:
            _, _, path = heapq.heappop(self._due)
            track = self._pending.get(path)
            if track is None:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                self._pending.pop(path, None)
                continue
            if (st.st_size, st.st_mtime_ns) != (track.size, track.mtime_ns):
                track.size, track.mtime_ns, track.changed = st.st_size, st.st_mtime_ns, now
            # An open writer is waited for until it closes; if that event was lost, a
            # file unchanged for a whole rescan interval is taken anyway.
            wait = max(self.settle, self.rescan) if track.writing else self.settle
            wait = self._held.get(path, wait)   # put back to finish: its own wait, whatever the settle time
            if now - track.changed >= wait:
                if path not in ready:   # the heap may hold a path twice
                    ready.append(path)
            else:
                heapq.heappush(self._due, (track.changed + wait, next(self._seq), path))
        if not ready:
            return
        if now - self._looked < LOOK_EVERY:   # at most a few /proc scans a second, each for all files due
            for path in ready:
                heapq.heappush(self._due, (self._looked + LOOK_EVERY, next(self._seq), path))
            return
        # Unchanged is not complete while a process still holds the file open for writing (one /proc
        # scan for all of them; core/openfiles.py says which writers it can see).
        self._looked = now
        writers, _ = open_for_writing(ready)
        for path in ready:
            if path in writers:
                self._noted.note(path, f"still open for writing by process {writers[path]}; it is taken once closed")
                heapq.heappush(self._due, (now + max(self.settle, 0.5), next(self._seq), path))
                continue
            if self._pending.pop(path, None) is not None:
                self._hand_on(path, "settled")

    def _hand_on(self, path: Path, how: str) -> None:
        if path in self._inflight:
            return
        self._held.pop(path, None)
        self._noted.forget(path)
        self._inflight.add(path)
        self._ready.put(Arrival(path, time.monotonic(), how))

    def _on_done(self, path: Path) -> None:
        self._inflight.discard(path)
        if path in self._again:
            self._again.discard(path)
            if path not in self._pending:
                self._begin(path)

    def _reconcile(self) -> None:
        """The start-up and periodic scan: track every acceptable file nobody is tracking."""
        if self._stopping.is_set():
            return
        for folder in self.folders:   # first, or the observer cannot watch a folder removed meanwhile
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
        self._ensure_observer()
        present = set()
        found = []
        self._noted.scanning = True
        try:
            for folder in self.folders:
                try:
                    entries = [(e.name, e.is_dir(follow_symlinks=False), e) for e in os.scandir(folder)]
                except OSError as e:
                    logger.warning("{}: cannot scan {} ({})", self.label, folder, e)
                    continue
                for name, is_dir, entry in entries:
                    path = folder / name
                    present.add(path)
                    if is_partial(name):
                        continue
                    if not self.accept(name):
                        self._noted.odd(path, is_dir)
                    elif path not in self._pending and path not in self._inflight:
                        found.append((_mtime(entry), path))
            # A backlog goes oldest first, as a queue should (not in the folder's order).
            for _, path in sorted(found, key=lambda t: t[0]):
                self._begin(path)
        finally:
            self._noted.scanning = False
        self._noted.keep_only(present)

    def left_alone(self, limit: int) -> tuple[dict[Path, int], list[tuple[Path, Note]]]:
        """Files left alone for good: how many per folder, and the newest limit of them per folder, newest first."""
        return self._noted.left_alone(limit)

    # -- handler threads ----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            arrival = self._ready.get()
            if arrival is None or self._stopping.is_set():
                return
            try:
                self.folders[arrival.path.parent](arrival)
            except Exception:
                logger.exception("{}: handling {} failed; it is offered again at the next scan",
                                 self.label, arrival.path)
            finally:
                self._msgs.put(("done", arrival.path))
