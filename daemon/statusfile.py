"""status.json as the service writes it: the per-queue lists beside the board's counts, and a failed write said once.

Beside ops.status.StatusBoard's counts, each queue lists the files its
watchers left alone (in its inbox and train/ folders), the training halves
waiting for their partner and the training files refused (the pairs
intake's). A status file that cannot be written (the state disk full or
read-only) is said once, and once more when it is written again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from loguru import logger

from .core.config import Config
from .core.names import shown
from .ops.status import LIST_MAX, STATUS_FILE, iso_time, listing


def add_seen(cfg: Config, watchers, intakes: dict, extra: dict[str, dict], hints: dict | None = None) -> None:
    """Into extra, per queue: the files left alone in its inbox and train/ folders (what watchers logged),
    the training halves waiting for their partner, and the training files refused (the intakes'); hints:
    per queue the color points waiting for their picture (the feed's sidecar.Waiting)."""
    ignored: dict[str, list] = {q: [] for q in cfg.queues}
    counts: dict[str, int] = dict.fromkeys(cfg.queues, 0)
    where = {Path(os.path.abspath(cfg.inbox(q))): (q, "inbox") for q in cfg.queues}
    where |= {Path(os.path.abspath(cfg.train_inbox(q))): (q, "train") for q in cfg.queues}
    for watcher in watchers:
        per_folder, notes = watcher.left_alone(LIST_MAX)
        for folder, n in per_folder.items():
            if folder in where:
                counts[where[folder][0]] += n
        for path, note in notes:
            q, kind = where.get(path.parent, (None, ""))
            if q is not None:
                ignored[q].append({"name": shown(path.name), "where": kind, "reason": note.why, "fix": note.fix,
                                   "since": note.since})
    for q in cfg.queues:
        files = [{**e, "since": iso_time(e["since"])} for e in sorted(ignored[q], key=lambda e: -e["since"])]
        extra[q]["ignored"] = listing(counts[q], files[:LIST_MAX])
        extra[q]["halves_waiting"] = listing(*intakes[q].waiting(LIST_MAX))
        if hints and q in hints:
            extra[q]["hints_waiting"] = listing(*hints[q].listing(LIST_MAX))
        count, files, earlier = intakes[q].refused()
        extra[q]["training_refused"] = {**listing(count, files), "earlier": earlier}


class StatusFile:
    """Writes status.json through write(); a failure is logged once, not at every interval."""

    def __init__(self):
        self._error = ""       # why status.json cannot be written, once said; "" while it can

    def write(self, cfg: Config, write: Callable[[], None]) -> None:
        """Run write() (the board's write of cfg's status file); an OSError is said once, and its end too."""
        try:
            write()
        except OSError as e:  # the state disk full or read-only: said once, not at every interval
            why = e.strerror or str(e)
            if why != self._error:
                logger.warning("cannot write {}: {}; `reverser status` shows an old state until it can be "
                               "written again (tried every {:g} s, said once)", cfg.paths.state / STATUS_FILE,
                               why, cfg.status.interval_seconds)
            self._error = why
        else:
            if self._error:
                logger.info("{} is written again", cfg.paths.state / STATUS_FILE)
            self._error = ""
