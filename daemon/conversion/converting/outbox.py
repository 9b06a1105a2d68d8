"""Results an outbox cannot take now: held, the fault said once, and their writes tried again until it takes them.

An outbox that cannot take results (its disk full, read-only, no permission)
is not the input's fault: such a result is held, and its write tried again
every little while (at most HOLD_MAX_SECONDS apart), for as long as it takes,
without failing or quarantining the input. The first fault of a folder is
logged once, and one line says when results are written there again.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Callable

from loguru import logger

from .jobs import Job
from .workers import later

# Write errors that say the outbox cannot take results now, whatever the result.
OUTBOX_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
HOLD_MAX_SECONDS = 30.0   # the longest pause between tries of a held result


class Outbox:
    """The pipeline's held results: how many, and which outbox folders take none now (and why)."""

    def __init__(self, backoff: float, closing: Callable[[], bool]):
        """backoff: the first pause, doubled at each try; closing(): the pipeline is closing (no more tries)."""
        self._backoff, self._closing = backoff, closing
        self._lock = threading.Lock()
        self.held = 0                            # results waiting for their outbox to take them
        self._blocked: dict[Path, str] = {}      # outbox folder -> why it takes no results, said once

    def hold(self, job: Job, attempt: int, error: OSError, resubmit: Callable[[int], None]) -> None:
        """The outbox takes no results now: say so once, and try again later, for as long as it takes."""
        why = error.strerror or str(error)
        with self._lock:
            first = self._blocked.get(job.out_dir) != why
            self._blocked[job.out_dir] = why
            self.held += 1
        delay = min(HOLD_MAX_SECONDS, self._backoff * 2 ** (attempt - 1))
        if first:
            logger.error("cannot write results into {}: {}. Results wait (their inputs, {} first, stay in work/; "
                         "none is failed or lost) and are tried again every {:g} s at most: free space there "
                         "or fix its permissions", job.out_dir, why, job.label or job.path.name, HOLD_MAX_SECONDS)

        def again():
            with self._lock:
                self.held -= 1
            if not self._closing():  # a closing pipeline leaves the job in work/, for the next start
                resubmit(attempt + 1)

        later(delay, again)

    def unblocked(self, folder: Path) -> None:
        """A result was written into folder: if it took none before, say that it does again."""
        if folder in self._blocked:
            with self._lock:
                why = self._blocked.pop(folder, None)
            if why is not None:
                logger.info("results are written into {} again", folder)
