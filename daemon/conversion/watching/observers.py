"""watchdog's observers as the watcher wants them: inotify with close events where it can, else polling.

Two adjustments to watchdog, both explained where they are made: its inotify
thread's error at a normal stop is filtered out of the log, and a rename's
first half is held 20 ms instead of 500 ms while watchdog looks for the second.
start_observer falls back to polling where inotify cannot start (usually the
watch limit).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from loguru import logger
from watchdog.events import (FileClosedEvent, FileClosedNoWriteEvent, FileCreatedEvent, FileDeletedEvent,
                             FileModifiedEvent, FileOpenedEvent, FileSystemEventHandler)


class _QuietStop(logging.Filter):
    """watchdog 7 logs an error when its inotify thread is stopped mid-read, which is how stop() works."""

    def filter(self, record):
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietStop())


def _shorten_move_pairing() -> None:
    """Let watchdog hold a rename's first half 20 ms, not 500 ms, while it looks for the second half.

    watchdog queues every IN_MOVED_FROM for its `delay` to pair it with an
    IN_MOVED_TO, and its queue is first in, first out: each claim (a rename out
    of the inbox) held every later event back by up to half a second. The
    tracker needs no pairs (it treats a move's two ends apart) and the kernel
    reports the halves of one rename together, so a short delay loses nothing.
    """
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # other watchdog versions: keep their behaviour
        return
    InotifyMoveEventGrouper.delay = min(InotifyMoveEventGrouper.delay, 0.02)


class Forward(FileSystemEventHandler):
    """Runs on the observer's thread: only puts events on the tracker's queue."""

    def __init__(self, put):
        self.put = put

    def dispatch(self, event):
        if not event.is_directory:
            self.put(("event", event))


KINDS = {FileCreatedEvent: "created", FileModifiedEvent: "modified", FileOpenedEvent: "opened",
         FileClosedEvent: "closed", FileClosedNoWriteEvent: "closed-nowrite", FileDeletedEvent: "deleted"}


def new_observer(kind: str, poll: float = 1.0):
    """(a watchdog observer of kind auto, inotify or polling, whether it reports close-after-write)."""
    if kind == "polling":
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=poll), False
    try:
        from watchdog.observers.inotify import InotifyObserver

        _shorten_move_pairing()
        # Full events: a file moved in from an unwatched folder arrives as a move, not a create.
        return InotifyObserver(generate_full_events=True), True
    except (ImportError, OSError):
        if kind == "inotify":
            raise
        from watchdog.observers import Observer

        return Observer(), False


def start_observer(kind: str, poll: float, folders: Iterable[Path], put: Callable, label: str):
    """(a started observer of kind watching folders, events to put; whether it reports close-after-write).
    With kind auto, an inotify observer that cannot start falls back to polling, with a warning."""
    folders = list(folders)
    obs, close_events = new_observer(kind, poll)
    try:
        for folder in folders:
            obs.schedule(Forward(put), str(folder), recursive=False)
        obs.start()
    except OSError as e:
        obs.stop()
        if kind != "auto":
            raise
        # Usually the inotify watch limit: polling still works, only slower to notice.
        logger.warning("{}: inotify is unavailable ({}); polling every {:g} s instead. "
                       "Raise fs.inotify.max_user_watches to use inotify.", label, e, poll)
        obs, close_events = new_observer("polling", poll)
        for folder in folders:
            obs.schedule(Forward(put), str(folder), recursive=False)
        obs.start()
    return obs, close_events


def stop_observer(obs) -> None:
    """Stop obs (None: nothing to stop), waiting for it a little; errors of an observer already gone pass."""
    if obs is not None:
        try:
            obs.stop()
            obs.join(2.0)
        except (OSError, RuntimeError):
            pass


def watching(obs, folders: int) -> bool:
    """obs runs and still watches all its folders (an inotify watch ends when its folder is removed)."""
    return obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters) \
        and len(obs.emitters) == folders
