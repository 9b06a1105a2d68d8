"""The micro-batching pipeline: decode threads -> bounded queue -> batcher -> one forward -> encode threads.

A job is one file. Decode threads read it, check the limits, decode it and
prepare the model input at its working size; the batcher's one thread takes up
to max_batch prepared items of one queue and working size, waiting at most
max_delay_ms counted from the first of them queued, and runs one forward pass;
encode threads recombine each output at full size, encode it and write it
temp-then-rename. The model computes while other threads decode and encode.
A multi-page TIFF goes through page by page, each page a decode, a forward
and a finish of its own, into one multi-page result (document.py). A decode
past [limits] decode_seconds fails its file (deadline.py).

An outbox that cannot take results (its disk full, read-only, no permission)
is not the input's fault: such a result is held and tried again (outbox.py).
Held jobs keep their room, so the service stops claiming new files meanwhile
and the rest wait in the inbox.

One bad image fails alone: decoding and encoding are per item, and a batch
whose forward pass fails (an out-of-memory error above all) is split in halves
and retried, down to single items. Jobs in flight are capped by count (reserve()
blocks when the cap is reached) and by bytes: an image's cost is estimated
from its header and taken from the memory budget before it is decoded
(budget.py), so a flood of files, large or small, keeps memory within the
budget. Once the pipeline has been idle for a moment, freed memory is given
back to the system (core/memory.py). The pipeline
knows nothing of devices beyond what the Predictor hides (autocast, pinned
memory and non-blocking copies on CUDA), and nothing of inboxes: each job says
where its result goes and whom to tell.

close() waits for the work in flight until a deadline. Past it, the pipeline
is abandoned: threads still busy (a long forward pass) may finish computing,
but none writes a result or reports an outcome any more, so the files left
in work/ can be taken back by whoever runs next (a reload's new pipeline)
without anything being converted twice. A write under way when the deadline
comes is finished first; close() waits for it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from functools import partial
from typing import Callable

import torch
from loguru import logger

from unet import ImageError, Predictor

from ...core import memory
from ...core.fs import passing, write_atomic
from . import decoding
from .batching import pick
from .budget import MemoryBudget, admit
from .colorinputs import refusal
from .deadline import Deadlines
from .decoding import Item
from .jobs import Job, JobOutcome, PipelineSettings
from .outbox import OUTBOX_FAULTS, Outbox
from .unfinished import unfinished
from .workers import Pool, is_oom, later


TRIM_AFTER_SECONDS = 1.0  # idle this long after work: give freed memory back


_STOP = object()


class Pipeline:
    """Decode, batch, forward, encode; see the module docstring."""

    def __init__(self, predictors: dict[str, Predictor], max_batch: dict[str, int], settings: PipelineSettings,
                 before_batch: Callable[[str, int], object] | None = None,
                 after_batch: Callable[[object], None] | None = None):
        """before_batch(queue, size) is called before each forward pass and after_batch(its result) after it,
        failed or not: a health check can tell a wedged forward pass from an idle pipeline."""
        self._predictors = dict(predictors)
        self._before_batch, self._after_batch = before_batch, after_batch
        self.max_batch = dict(max_batch)
        self.s = settings
        self._cond = threading.Condition()
        self._reserved = 0
        self.inflight: dict[str, int] = defaultdict(int)   # per queue: submitted, outcome not yet given
        self.batches: dict[str, int] = defaultdict(int)    # per queue: forward passes run
        self.device_seconds: dict[str, float] = defaultdict(float)
        self.outbox = Outbox(settings.retry_backoff, lambda: self._closing)   # results held for their outbox
        self._closing = False
        self._abandoned = False                  # past close()'s deadline: nothing is written or reported
        self._reporting = 0                      # threads writing a result or reporting an outcome now
        self.memory = MemoryBudget(settings.memory_budget, on_pressure=memory.trim)
        self._drained = 0                        # times the pipeline went idle: a trim is for the latest
        self._batchq: queue.SimpleQueue = queue.SimpleQueue()
        self._decoders = Pool("decode", settings.decode_threads)
        self._deadlines = Deadlines(settings.decode_seconds, self._decoders, self._fail, self.memory.give)
        self._encoders = Pool("encode", settings.encode_threads)
        self._batcher = threading.Thread(target=self._batch_loop, name="batcher", daemon=True)
        self._batcher.start()

    # -- for callers --------------------------------------------------------------------------

    def predictor(self, q: str) -> Predictor:
        return self._predictors[q]

    def swap(self, q: str, predictor: Predictor) -> None:
        """Use predictor for queue q from the next decoded item on; items already prepared keep theirs."""
        self._predictors[q] = predictor

    def reserve(self, timeout: float | None = None) -> bool:
        """Wait for room for one more job; False when the pipeline is closing (or on timeout)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._closing or self._reserved + sum(self.inflight.values()) < self.s.capacity, timeout)
            if self._closing or not ok:
                return False
            self._reserved += 1
            return True

    def unreserve(self) -> None:
        with self._cond:
            self._reserved -= 1
            self._cond.notify_all()

    def submit(self, job: Job) -> bool:
        """Start a job whose room was reserved; False when closing (the job is then not run)."""
        with self._cond:
            self._reserved -= 1
            if self._closing:
                self._cond.notify_all()
                return False
            self.inflight[job.queue] += 1
        self._decoders.submit(self._decode, job, 1)
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has its outcome."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(self.inflight.values()) and not self._reserved, timeout)

    def dead_threads(self) -> str | None:
        """Which worker threads stopped (a bug), in words, or None. Whether work in flight moves is
        ops.health.Health's question: the pipeline's before_batch/after_batch hooks feed it."""
        threads = [self._batcher, *self._decoders.threads, *self._encoders.threads]
        dead = [t.name for t in threads if not t.is_alive()]
        return f"worker thread(s) {', '.join(dead)} stopped" if dead and not self._closing else None

    @property
    def stopped(self) -> bool:
        """All worker threads have ended (after close())."""
        return not any(t.is_alive() for t in (self._batcher, *self._decoders.threads, *self._encoders.threads))

    def stop_intake(self) -> None:
        """Refuse new jobs from now on; reserve() waiters get False, and so do decoders waiting for memory."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.memory.close()

    def close(self, deadline: float) -> int:
        """Stop: finish the batch in flight and write what is computed, by deadline; return jobs left unfinished.

        Jobs not yet in a forward pass are dropped: their files stay where they
        are (work/) and whoever owns them picks them up again.
        """
        self.stop_intake()
        self._decoders.close(drop=True)
        self._batchq.put(_STOP)
        self._batcher.join(max(0.0, deadline - time.monotonic()))
        self._encoders.close(drop=False)   # results already computed still get written
        self._encoders.join(deadline)
        self._decoders.join(deadline)
        if not self.stopped:
            with self._cond:  # writes under way finish first (a hung disk is given a minute)
                self._abandoned = True
                if not self._cond.wait_for(lambda: not self._reporting, 60):
                    logger.error("a result is still being written after the pipeline was abandoned")
        with self._cond:
            return sum(self.inflight.values())

    # -- decode -------------------------------------------------------------------------------

    def _decode(self, job: Job, attempt: int) -> None:
        if self._closing:
            return
        try:
            data = decoding.read(job, self.s)
        except ImageError as e:
            return self._fail(job, str(e))
        except OSError as e:
            return self._retry(job, attempt, e, lambda n: self._decoders.submit(self._decode, job, n))
        doc = job.doc   # a multi-page TIFF past its first page: the next page, by the first page's model
        predictor = doc.predictor if doc else self._predictors[job.queue]
        if not admit(self.memory, job, data, predictor.task.name, self.s.max_pixels, doc.page if doc else 0):
            return  # closing: the file stays in work/
        ticket = self._deadlines.start(job)   # past [limits] decode_seconds, the job fails (deadline.py)
        held = [data]
        del data   # prepare() lets the file's bytes go once decoded, before the model's input is made
        d = decoding.prepare(job, held, predictor, self.s)
        if not self._deadlines.end(ticket):
            return   # it came past its deadline: its job has failed already
        if d.caught is not None and passing(d.caught):
            return self._wait(job, d.caught)
        if d.error:
            return self._fail_or_wait(job, d.error, d.decoding)
        if d.color == "fail":
            return self._fail(job, *refusal(job))
        item = Item(job, d.source, d.prepared, predictor, time.monotonic(), d.kept, decoding.notes(job, d, predictor))
        if d.kept is not None:
            return self._encoders.submit(self._encode, item, None, 1)
        self._batchq.put(item)

    def _fail_or_wait(self, job: Job, error: str, decoding: bool) -> None:
        """A file that failed is judged on its content only when that content is whole: not when it changed
        after it was claimed, a process still holds it open for writing, or (a decode error) it was
        written so recently that its writer may come back to append more. Then it is unfinished."""
        why = unfinished(job, self.s.young_seconds if decoding else 0.0)
        if not why:
            return self._fail(job, error)
        self._finish(job, JobOutcome(False, None, f"{error} ({why})", size=job.size, unfinished=True,
                                     ms=1000 * (time.monotonic() - job.complete_at)))

    def _wait(self, job: Job, error: BaseException) -> None:
        """The service ran out of file handles (EMFILE, ENFILE): no fault of the file, which goes back to
        wait in the inbox and is taken again later; never to failed/."""
        self._finish(job, JobOutcome(False, None, f"the service has too many files open ({error})", size=job.size,
                                     passing=True, ms=1000 * (time.monotonic() - job.complete_at)))

    def _retry(self, job: Job, attempt: int, error: OSError, resubmit: Callable[[int], None]) -> None:
        """A transient error (vanished, permission): try again after a growing pause, then give up; out of
        file handles: then the file waits (_wait)."""
        if attempt > self.s.retry_attempts:
            if passing(error):
                return self._wait(job, error)
            return self._fail(job, f"{error.strerror or error} (tried {attempt} times)",
                              "check the file's permissions and free space, and that nothing else moves "
                              "or locks the file")
        delay = self.s.retry_backoff * 2 ** (attempt - 1)
        logger.debug("{}: {}; trying again in {:.1f} s", job.label or job.path.name, error, delay)

        def again():
            if not self._closing:  # a closing pipeline leaves the job where it is
                resubmit(attempt + 1)

        later(delay, again)

    # -- batch and forward ----------------------------------------------------------------------

    def _batch_loop(self) -> None:
        groups: dict[tuple, list[Item]] = {}
        delay = self.s.max_delay_ms / 1000.0
        while not self._closing:
            now = time.monotonic()
            group = pick(groups, now, delay, self.max_batch)
            if group is not None:
                self._forward(group)
                continue
            wait = min((g[0].queued + delay for g in groups.values()), default=None)
            try:
                item = self._batchq.get(timeout=None if wait is None else max(0.0, wait - now))
            except queue.Empty:
                continue
            while item is not None:
                if item is _STOP:
                    return
                # Items batch with items of the same model and working size.
                groups.setdefault((id(item.predictor), item.prepared.key), []).append(item)
                try:
                    item = self._batchq.get_nowait()
                except queue.Empty:
                    item = None

    def _forward(self, items: list[Item]) -> None:
        predictor, q = items[0].predictor, items[0].job.queue
        token = self._before_batch(q, len(items)) if self._before_batch else None
        t = time.perf_counter()
        try:
            ys = predictor.run([it.prepared for it in items])
        except Exception as e:
            if self._after_batch:
                self._after_batch(token)
            oom = is_oom(e)
            if oom and predictor.cuda:
                torch.cuda.empty_cache()
            if len(items) > 1:
                logger.warning("batch of {} ({}) failed ({}); splitting it and trying the halves",
                               len(items), q, "out of memory" if oom else f"{type(e).__name__}: {e}")
                half = len(items) // 2
                self._forward(items[:half])
                self._forward(items[half:])
                return
            msg = "the device ran out of memory even for this image alone" if oom else f"model error: {e}"
            return self._fail(items[0].job, msg, "drop it again when the device is less busy" if oom else "")
        ms = 1000 * (time.perf_counter() - t)
        if self._after_batch:
            self._after_batch(token)
        self.batches[q] += 1
        self.device_seconds[q] += ms / 1000
        h, w = items[0].prepared.key
        logger.info("batch: {} x {} at {}x{} on {} in {:.0f} ms", len(items), q, w, h, predictor.device, ms)
        for it, y in zip(items, ys):
            self._encoders.submit(self._encode, it, y, 1)

    # -- encode and write ---------------------------------------------------------------------

    def _encode(self, item: Item, y: torch.Tensor, attempt: int) -> None:
        job = item.job
        try:
            data = decoding.result(item, y, self.s)
            if data is None:
                return self._next_page(item)
        except Exception as e:
            item.source = item.prepared = item.kept = None
            if passing(e):
                return self._wait(job, e)
            where = f"{job.doc.where()}: " if job.doc is not None else ""
            return self._fail(job, f"{where}cannot encode the result: {type(e).__name__}: {e}")
        if not self._enter():
            return  # abandoned: its input stays in work/ for whoever runs next
        try:
            try:
                out = write_atomic(job.out_dir, job.out_name, data, self.s.on_exists, receipt=job.receipt or None,
                                   writer=self.s.writer)
            except OSError as e:
                if e.errno in OUTBOX_FAULTS:
                    return self.outbox.hold(job, attempt, e, lambda n: self._encoders.submit(self._encode, item, y, n))
                return self._retry(job, attempt, e, lambda n: self._encoders.submit(self._encode, item, y, n))
            self.outbox.unblocked(job.out_dir)
            # Let go of the result before the budget gets its bytes back, or the next file's decode
            # would overlap them.
            del data
            item.source = item.prepared = item.kept = None
            self._finish(job, JobOutcome(True, out, size=job.size, ms=1000 * (time.monotonic() - job.complete_at),
                                         note=item.note), entered=True)
        finally:
            self._leave()

    def _next_page(self, item: Item) -> None:
        """A document's page is in its result: give its memory back and decode the next page."""
        item.source = item.prepared = item.kept = None
        memory.trim()   # the page's freed arrays go back to the system before the next page is decoded
        self.memory.give(item.job.memory)
        item.job.memory = 0
        self._decoders.submit(self._decode, item.job, 1)

    def _enter(self) -> bool:
        """Start writing or reporting; False once abandoned (see the module docstring)."""
        with self._cond:
            if self._abandoned:
                return False
            self._reporting += 1
            return True

    def _leave(self) -> None:
        with self._cond:
            self._reporting -= 1
            self._cond.notify_all()

    # -- outcomes -------------------------------------------------------------------------------

    def _fail(self, job: Job, error: str, hint: str = "") -> None:
        self._finish(job, JobOutcome(False, None, error, hint, job.size, 1000 * (time.monotonic() - job.complete_at)))

    def _finish(self, job: Job, outcome: JobOutcome, entered: bool = False) -> None:
        """Report job's outcome (unless abandoned); entered: the caller has _enter()ed already."""
        mine = not entered and self._enter()
        try:
            if entered or mine:
                job.on_done(job, outcome)
        except Exception:
            logger.exception("internal error after {}", job.label or job.path)
        finally:
            if mine:
                self._leave()
            self.memory.give(job.memory)
            job.memory = 0
            if job.doc is not None:
                job.doc.close()
            with self._cond:
                self.inflight[job.queue] -= 1
                idle = not any(self.inflight.values()) and not self._reserved
                if idle:
                    self._drained += 1
                    drained = self._drained
                self._cond.notify_all()
            if idle:
                later(TRIM_AFTER_SECONDS, partial(self._trim_if_idle, drained))

    def _trim_if_idle(self, drained: int) -> None:
        """Still idle since the drain that asked for this: give freed memory back to the system."""
        with self._cond:
            if self._drained != drained or any(self.inflight.values()) or self._reserved:
                return
        before = memory.rss()
        if memory.trim():
            logger.debug("idle: memory given back, resident {:.0f} MB -> {:.0f} MB", before / 1e6,
                         memory.rss() / 1e6)

