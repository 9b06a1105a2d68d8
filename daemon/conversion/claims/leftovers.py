"""Finished inputs that could not leave work/: moved on again, after pauses, as soon as their folder takes them.

An input whose result is written (or whose failure is known) moves to done/
(or failed/). When that folder's disk is full or read-only, the input waits
in work/ and its move is tried again here, after a pause that doubles from
FIRST_S to MOST_S, so it moves on when space returns, with no reload or
restart. A move is idempotent (core.fs.move_into finishes an earlier one), so
a try cut short by a crash is finished by the next start's recovery. The
first failure of a kind is logged, later ones are counted, and one line says
when the waiting inputs have all moved on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from loguru import logger

from .spool import Claimed

FIRST_S, MOST_S = 2.0, 30.0


@dataclass
class _Waiting:
    item: Claimed
    move: Callable[[], None]    # the move out of work/ (and what follows it: the receipt dropped, a count)
    where: str                  # the folder it goes to, for the log
    tries: int
    due: float


class Leftovers:
    """Inputs waiting in work/ for done/ or failed/ to take them; one thread tries them again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._waiting: dict[str, _Waiting] = {}   # by the input's work/ path
        self._said: set[str] = set()              # failures logged already, by folder and reason
        self._moved = 0                           # moved on after waiting, since the last time all were
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def add(self, item: Claimed, move: Callable[[], None], where: str, error: OSError) -> None:
        """item could not be moved into where (error): try move() again after a pause."""
        why = error.strerror or str(error)
        with self._cond:
            if self._stopping:
                return  # stopping: it stays in work/ and the next start finishes it
            self._waiting[str(item.path)] = _Waiting(item, move, where, 1, self.clock() + FIRST_S)
            first = (where, why) not in self._said
            self._said.add((where, why))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="leftovers", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if first:
            logger.error("{}: {} cannot be moved into {} ({}); it waits in work/ (its result is safe) and is "
                         "moved again as soon as {} takes files: tried again after {:g} s, then at most every "
                         "{:g} s. Other inputs held up the same way are counted, not logged",
                         item.queue, item.name, where, why, where, FIRST_S, MOST_S)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def stop(self) -> None:
        """Try nothing more; what waits stays in work/, where the next start (or a reload) takes it back."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    due = [w for w in self._waiting.values() if w.due <= self.clock()]
                    if due:
                        break
                    nearest = min((w.due for w in self._waiting.values()), default=None)
                    self._cond.wait(None if nearest is None else max(0.01, nearest - self.clock()))
                if self._stopping:
                    return
            for w in due:
                self._try(w)

    def _try(self, w: _Waiting) -> None:
        key = str(w.item.path)
        try:
            w.move()
        except FileNotFoundError:
            pass  # taken back from work/ already (a reload's recovery): it is not ours to move
        except OSError as e:
            with self._cond:
                w.tries += 1
                w.due = self.clock() + min(MOST_S, FIRST_S * 2 ** (w.tries - 1))
            logger.debug("{}: {} still cannot be moved into {} ({}; try {})", w.item.queue, w.item.name,
                         w.where, e.strerror or e, w.tries)
            return
        with self._cond:
            if self._waiting.pop(key, None) is not None:
                self._moved += 1
            if self._waiting:
                return
            moved, self._moved = self._moved, 0
            self._said.clear()  # the next failure is news again
        logger.info("{}: the {} input(s) that waited in work/ have moved on (into {})", w.item.queue, moved,
                    w.where)
