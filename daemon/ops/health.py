"""The one health check: is the service making progress? Fed by the pipeline's hooks, read by the main loop.

Unhealthy when a watched thread died, when one batch runs too long, or when
work is queued and no batch has finished for too long. The watchdog
(ops/notify.Watchdog) withholds systemd's pings while this finds a problem.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# A batch running this long, or queued work with no batch finishing for this long,
# is a wedge. Far above a healthy forward pass at working resolution (seconds on a
# slow CPU); Health raises the limit further on hardware where batches are slow.
STALL_SECONDS = 120.0
SLOW_FACTOR = 10  # ... to this many times the slowest of the recent batches


class Health:
    """Is the pipeline making progress? Fed by the service's threads, read by the main loop.

    Unhealthy when a watched thread died, when one batch runs too long, or when
    work is queued and no batch has finished for too long.
    """

    def __init__(self, stall_seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.stall_seconds = STALL_SECONDS if stall_seconds is None else stall_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._threads: dict[str, Callable[[], bool]] = {}
        self._running: dict[int, float] = {}  # batch token -> start time
        self._next = 0
        self._durations: deque[float] = deque(maxlen=20)
        self._last_progress = clock()
        self._waiting_since: float | None = None

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        """Count the thread (or anything with a liveness test) as essential, e.g. watch('watcher', obs.is_alive)."""
        with self._lock:
            self._threads[name] = alive

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._threads.pop(name, None)

    def batch_started(self) -> int:
        """Call before a forward pass; pass the returned token to batch_finished()."""
        with self._lock:
            self._next += 1
            self._running[self._next] = self.clock()
            return self._next

    def batch_finished(self, token: int) -> None:
        """Call when the batch is done, whether it succeeded or failed: either way the pipeline moved."""
        with self._lock:
            now = self.clock()
            self._durations.append(now - self._running.pop(token, now))
            self._last_progress = now

    def limit(self) -> float:
        """Seconds without progress that count as a stall."""
        with self._lock:
            slowest = max(self._durations, default=0.0)
        return max(self.stall_seconds, SLOW_FACTOR * slowest)

    def problem(self, queued: int = 0) -> str | None:
        """None when healthy, else why not, in words; queued = files waiting for the pipeline."""
        limit = self.limit()
        with self._lock:
            now = self.clock()
            dead = [name for name, alive in self._threads.items() if not alive()]
            if dead:
                return f"{', '.join(sorted(dead))} stopped running"
            longest = now - min(self._running.values()) if self._running else 0.0
            if longest > limit:
                return f"a batch has been running for {longest:.0f} s (limit {limit:.0f} s)"
            if queued <= 0:
                self._waiting_since = None
                return None
            if self._waiting_since is None:
                self._waiting_since = now
            idle = now - max(self._last_progress, self._waiting_since)
            if idle > limit:
                if self._running:  # the batch in flight is what holds everything up: name it
                    return f"a batch has been running for {longest:.0f} s (limit {limit:.0f} s)"
                return f"{queued} file(s) waiting and no batch finished for {idle:.0f} s"
            return None
