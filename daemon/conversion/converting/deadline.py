"""Each decode's deadline ([limits] decode_seconds): a decode still running past it fails its file, and
the thread stuck in it is replaced, so no file holds a conversion slot for ever.

A decode in C (a codec looping on a hostile file) cannot be stopped from
Python. So at the deadline its job is failed with the reason (its input is
quarantined, its slot in flight freed) and another decode thread is started
in its place; the memory taken for it stays taken until the stuck decode
does return, when what it made is dropped and its thread ends. The default
deadline is half an hour, far beyond any real image's decode on a slow
machine (a 120 MP TIFF decodes in seconds).
"""

from __future__ import annotations

import threading
from typing import Callable

from .jobs import Job
from .workers import Pool


class Deadlines:
    """The decodes under way and their timers."""

    def __init__(self, seconds: float, pool: Pool, fail: Callable[[Job, str], None], give: Callable[[int], None]):
        self.seconds = seconds
        self._pool, self._fail, self._give = pool, fail, give
        self._lock = threading.Lock()
        self._running: dict[object, tuple[Job, threading.Thread, threading.Timer]] = {}
        self._late: dict[object, int] = {}    # a late decode's ticket -> the memory it still holds

    def start(self, job: Job) -> object:
        """A decode of job starts on this thread: its ticket, for end()."""
        ticket = object()
        timer = threading.Timer(self.seconds, self._past, (ticket,))
        timer.daemon = True
        with self._lock:
            self._running[ticket] = (job, threading.current_thread(), timer)
        timer.start()
        return ticket

    def end(self, ticket: object) -> bool:
        """The decode returned: True to go on with it, False when it came past its deadline (its job has
        failed already; the memory it held is given back here, and what it made is to be dropped)."""
        with self._lock:
            entry = self._running.pop(ticket, None)
            late = self._late.pop(ticket, 0)
        if entry is not None:
            entry[2].cancel()
            return True
        self._give(late)
        return False

    def _past(self, ticket: object) -> None:
        with self._lock:
            entry = self._running.pop(ticket, None)
            if entry is None:
                return
            job, thread, _ = entry
            self._late[ticket], job.memory = job.memory, 0   # held by the stuck decode, not by the job
        self._pool.replace(thread)
        where = f"{job.doc.where()}: " if job.doc is not None else ""
        self._fail(job, f"{where}decoding took longer than {self.seconds:g} s ([limits] decode_seconds): a "
                        "damaged or hostile file, or raise decode_seconds if the machine is that slow")
