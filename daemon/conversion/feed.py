"""The inbox feed: complete files in, claimed into work/, through the pipeline, inputs moved on after.

    watcher Arrival --take()--> Spool.claim (work/) --> Pipeline.submit
        ... JobOutcome --> done/ (or deleted) and the receipt forgotten; or failed/ with a reason
        (where that folder takes nothing now, a full disk, the input waits in work/: leftovers.py)

What is not a regular file (a link, a FIFO, a device) is quarantined without
being read. Files left in work/ by a crash (or a reload) go through first,
from a helper thread. Each finished input is reported to on_result(queue, ok,
seconds), which the service uses for its status board and metrics, and where
it went to on_placed. The start-up recovery tells on_placed too of each input
the last run had converted (its result written, its input not yet moved on),
and then on_recovered of the inputs it sent through again: a listener still
waiting for any other input will hear nothing more of it.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

from loguru import logger

from unet.hints import HintError

from ..core.config import Config
from ..core.fs import passing
from ..core.namebytes import near
from ..core.names import hints_stem, is_hints, is_input, is_partial, output_name
from .claims.leftovers import Leftovers
from .claims.sidecar import Waiting, claim_hints, kept_picture, merged_hints, picture_waits
from .claims.spool import Claimed, Lost, Spool
from .converting.pipeline import Job, JobOutcome, Pipeline
from .converting.workers import later
from .watching.watcher import Arrival


def count_waiting(inbox: Path) -> int:
    """Inputs waiting in an inbox folder, not yet claimed (0 when it cannot be read)."""
    try:
        return sum(1 for e in os.scandir(inbox) if is_input(e.name) and not is_partial(e.name))
    except OSError:
        return 0


class InboxFeed:
    """Claims each complete inbox file, submits it to the pipeline, and moves its input on when it is done."""

    def __init__(self, cfg: Config, spools: dict[str, Spool], pipeline: Pipeline,
                 on_result: Callable[[str, bool, float | None], None]):
        self.cfg, self.spools, self.pipeline, self.on_result = cfg, spools, pipeline, on_result
        self.leftovers = Leftovers()   # finished inputs that done/ or failed/ could not take yet
        # Hints files that match no picture, per queue (conversion/claims/sidecar.py): refused after the pairs' timeout.
        self.hints_waiting = {q: Waiting(cfg.retrain.pair_timeout_minutes * 60) for q in spools}
        # Told when an unfinished file goes back to the inbox (path, seconds): the watcher's hold().
        self.on_put_back: Callable[[Path, float], None] | None = None
        # Told where each finished input went: (queue, the name it was dropped under, the result or None,
        # where the input went (done/, failed/) or None, the reason it failed or "", and for a result
        # claimed=(device, inode) it had in work/, which file of that name it was): the web's file index.
        self.on_placed: Callable[[str, str, Path | None, Path | None, str], None] | None = None
        # Told after recover(), which inputs (queue, name) it sent through again: the web's file index then
        # settles the files it still waits for that are neither there nor in the inbox (a kill -9 after their
        # input left work/, before on_placed was heard).
        self.on_recovered: Callable[[set[tuple[str, str]]], None] | None = None

    def close(self) -> None:
        """Stop moving leftovers; those still in work/ are taken back by whoever runs next."""
        self.leftovers.stop()

    def recover(self, include_own: bool) -> None:
        """Files left in work/ (a crash, or a reload) go through the pipeline first, from a helper thread;
        those the last run had converted already are told to on_placed."""
        items = [c for s in self.spools.values() for c in s.recover(include_own, partial(self._converted, s))]
        if self.on_recovered is not None:
            try:
                self.on_recovered({(c.queue, c.name) for c in items})
            except Exception:  # a listener's fault never stops the files
                logger.exception("telling which files were recovered failed")
        if not items:
            return
        logger.info("recovering {} file(s) left in work/ by an earlier run; they go through first", len(items))

        def feed():
            for c in items:
                if not self.pipeline.reserve():
                    return  # closing: they stay in work/
                self._start(self.spools[c.queue], c, time.monotonic())

        threading.Thread(target=feed, name="recover", daemon=True).start()

    def _converted(self, spool: Spool, item: Claimed, result: Path | None, kept: Path | None) -> None:
        """Recovery found item converted by the last run (its result is written): where it went, as _finished
        would have said."""
        if result is not None:
            self._placed(spool.queue, item.name, result, kept, "")
            self.on_result(spool.queue, True, None)   # its run died before counting it; how long it took is lost

    def take(self, q: str, arrival: Arrival) -> None:
        """Watcher handler: claim a complete inbox file and start it through the pipeline (a hints file
        alone: re-color its picture, or wait for it)."""
        pipeline, spool = self.pipeline, self.spools[q]
        if is_hints(arrival.path.name):
            return self._hints_alone(spool, arrival)
        if not pipeline.reserve():
            return  # closing: the file stays in the inbox
        try:
            item = self._claim(spool, arrival.path)
        except Lost:
            pipeline.unreserve()
            logger.debug("{}: gone before we could claim it (another service took it?)", arrival.path)
            return
        except OSError as e:
            pipeline.unreserve()
            logger.warning("{}: cannot take it from the inbox ({}); trying again at the next scan",
                           arrival.path, e.strerror or e)
            return
        self._start(spool, item, arrival.at)

    def _hints_alone(self, spool: Spool, arrival: Arrival) -> None:
        """A complete hints file with no picture claimed beside it: where done/ keeps its picture, claim that
        back with it and convert it again; where its picture is still in the inbox, leave it for that claim;
        else it waits (offered again at each scan) until the timeout refuses it. Hints younger than the
        settle time wait too: their picture may be on its way (the web places the hints first)."""
        path, stem, waiting = arrival.path, hints_stem(arrival.path.name), self.hints_waiting[spool.queue]
        try:
            young = time.time() - os.stat(path).st_ctime < self.cfg.watch.settle_seconds
        except OSError:
            return   # gone: its picture took it
        if young or picture_waits(spool.inbox, stem):
            return
        kept = kept_picture(spool.done_dir, stem)
        if kept is None:
            waited = waiting.wait(path)
            if waited > waiting.timeout_s:
                waiting.gone(path)
                self._refuse_hints(spool, path, waited)
            return
        waiting.gone(path)
        if not self.pipeline.reserve():
            return   # closing: the hints wait in the inbox, the picture in done/
        try:
            item = claim_hints(spool, spool.claim(kept[0], kept[1]))
        except (Lost, OSError) as e:
            self.pipeline.unreserve()
            if not isinstance(e, Lost):
                logger.warning("{}: cannot take {} back from {} to re-color it ({}); trying again at the next "
                               "scan", spool.queue, kept[1], spool.done_dir, e)
            return
        logger.bind(queue=spool.queue, file=item.name).info(
            "{}: {} came for {}, which {} keeps: coloring it again (the earlier result stays)",
            spool.queue, path.name, item.name, spool.done_dir)
        self._start(spool, item, arrival.at)

    def _refuse_hints(self, spool: Spool, path: Path, waited: float) -> None:
        try:
            item = spool.claim(path)
        except (Lost, OSError):
            return
        minutes = self.cfg.retrain.pair_timeout_minutes
        self._quarantine(spool, item, f"{path.name} waited {waited / 60:.0f} minutes for its picture "
                         f"{hints_stem(path.name)}_before.* and none came, and done/ keeps none of that name "
                         f"(pair_timeout_minutes = {minutes:g})",
                         f"drop the picture and its hints into {spool.inbox} together")

    def _claim(self, spool: Spool, path: Path) -> Claimed:
        lim = self.cfg.limits
        for attempt in range(lim.retry_attempts + 1):
            try:
                return spool.claim(path)
            except (Lost, FileExistsError):
                raise
            except OSError as e:
                if attempt == lim.retry_attempts or e.errno in (errno.ENAMETOOLONG, errno.EROFS):
                    raise
                time.sleep(lim.retry_backoff_seconds * 2 ** attempt)  # permission briefly denied, say
        raise AssertionError("unreachable")

    def _start(self, spool: Spool, item: Claimed, complete_at: float) -> None:
        """A claimed file (room reserved in the pipeline): refuse what is not a plain file, else submit it."""
        pipeline = self.pipeline
        try:
            st = os.lstat(item.path)
        except OSError as e:
            pipeline.unreserve()
            logger.warning("{}: {} vanished from work/ ({})", spool.queue, item.name, e)
            return
        try:   # its color points, claimed with it (or, recovered without them, from the inbox now)
            item = claim_hints(spool, item) if not item.companions else item
            hints = merged_hints(spool.companion_paths(item))
        except (HintError, OSError) as e:
            pipeline.unreserve()
            if passing(e):   # short of file handles: the pair waits, as a picture alone would
                self._put_back(spool, item, str(e), True)
                return
            self._quarantine(spool, item, f"bad hints: {e}", "fix the hints file (docs: Telling it the colors) "
                             "and drop the picture with it again")
            return
        if not stat.S_ISREG(st.st_mode):
            pipeline.unreserve()
            if stat.S_ISLNK(st.st_mode):
                why = ("it is a symbolic link; links are never followed, so nothing outside the inbox is read",
                       "copy the file itself into the inbox, not a link to it")
            else:
                why = ("it is not a regular file (a FIFO, socket or device)", "drop an image file instead")
            self._quarantine(spool, item, *why)
            return
        job = Job(spool.queue, item.path, self.cfg.outbox(spool.queue),
                  output_name(item.name, self.cfg.output.format),
                  partial(self._finished, spool, item, (st.st_dev, st.st_ino)),
                  complete_at, label=item.name, size=st.st_size, receipt=spool.receipt(item),
                  claimed=(st.st_size, st.st_mtime_ns), color_inputs=self.cfg.queues[spool.queue].color_inputs,
                  hints=hints)
        if not pipeline.submit(job):
            logger.debug("{}: {} stays in work/ (stopping)", spool.queue, item.name)

    def _finished(self, spool: Spool, item: Claimed, claimed: tuple[int, int], job: Job,
                  outcome: JobOutcome) -> None:
        """Pipeline callback: move the input on, count it, and say so in one line; claimed: its (device,
        inode) in work/, which tells on_placed which file this was (another may have had its name)."""
        q, log = spool.queue, logger.bind(queue=spool.queue, file=item.name)
        if outcome.unfinished or outcome.passing:
            self._put_back(spool, item, outcome.error, outcome.passing)
            return
        if not outcome.ok:
            self._quarantine(spool, item, outcome.error, outcome.hint)
            return
        kept = None
        try:
            kept = self._move_done(spool, item)
        except OSError as e:  # done/'s disk full or read-only: it moves when there is room (Leftovers)
            self.leftovers.add(item, partial(self._move_done, spool, item), str(spool.done_dir), e)
        self.on_result(q, True, outcome.ms / 1000)
        self._placed(q, item.name, outcome.output, kept, "", claimed=claimed)
        log.bind(output=outcome.output.name, bytes=outcome.size, ms=round(outcome.ms)).info(
            "{}: {} ({}) -> {} in {:.0f} ms{}", q, item.name, _size(outcome.size), outcome.output.name, outcome.ms,
            f"; {outcome.note}" if outcome.note else "")

    def _put_back(self, spool: Spool, item: Claimed, why: str, short: bool = False) -> None:
        """A file that may still be being written is not judged: back to the inbox, taken again once it has
        been left unchanged for rescan_seconds (or quarantined, when its writer has begun a new file).
        short: the service was short of file handles; the file goes back the same way, to wait."""
        wait = self.cfg.watch.rescan_seconds
        if self.on_put_back is not None:
            self.on_put_back(spool.inbox / item.name, wait)   # before it reappears, so no event hurries it
        try:
            spool.put_back(item)
        except OSError as e:
            if short and not isinstance(e, FileExistsError):   # still short: it waits in work/ a while more
                later(wait, partial(self._put_back, spool, item, why, short))
                return
            what = "a new file under its name is in the inbox" if isinstance(e, FileExistsError) else str(e)
            self._quarantine(spool, item, f"{why}, and it cannot go back to wait: {what}",
                             "write the file whole (or under a temporary name, renamed when done)")
            return
        log = logger.bind(queue=spool.queue, file=item.name)
        if short:
            log.warning("{}: {} was not converted now: {}; it went back to {} and is taken again in {:g} s",
                        spool.queue, item.name, why, near(spool.inbox, self.cfg.file), wait)
            return
        log.info("{}: {} is not complete yet: {}; it went back to {} and is taken again once unchanged for {:g} s",
                 spool.queue, item.name, why, near(spool.inbox, self.cfg.file), wait)

    @staticmethod
    def _move_done(spool: Spool, item: Claimed) -> Path | None:
        kept = spool.done(item)
        spool.forget_receipt(item)
        return kept

    def _placed(self, *where, **claimed) -> None:
        if self.on_placed is not None:
            try:
                self.on_placed(*where, **claimed)
            except Exception:  # a listener's fault never stops the files
                logger.exception("recording where {} went failed", where[1])

    def _quarantine(self, spool: Spool, item: Claimed, problem: str, hint: str = "") -> None:
        try:
            self._quarantine_now(spool, item, problem, hint)
        except OSError as e:  # failed/'s disk full or read-only: it moves when there is room (Leftovers)
            self.leftovers.add(item, partial(self._quarantine_now, spool, item, problem, hint),
                               str(spool.failed_dir), e)

    def _quarantine_now(self, spool: Spool, item: Claimed, problem: str, hint: str = "") -> None:
        log = logger.bind(queue=spool.queue, file=item.name)
        dest = spool.quarantine(item, problem, hint)
        self.on_result(spool.queue, False, 0.0)
        self._placed(spool.queue, item.name, None, dest, problem)
        log.warning("{}: {} failed: {}; moved to {} with {}.reason.txt beside it", spool.queue, item.name,
                    problem, near(dest.parent, self.cfg.file), dest.name)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
