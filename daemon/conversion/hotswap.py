"""Hot swap: when a queue's registry champion changes, load it off the hot path and swap it in between batches.

A thread polls each queue's model folder (the registry champion, else the
shipped model) every few seconds. A new folder (or new weights in the same
folder) is loaded on this thread, so conversion goes on meanwhile, then handed
to the pipeline, which uses it for items decoded from then on; items already
prepared by the old model finish on it. A champion that fails to load is
logged once and the running model kept.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from loguru import logger

from unet import Predictor
from unet.checkpoint import WEIGHTS, CheckpointError

from ..core.fs import passing
from .converting.pipeline import Pipeline

POLL_SECONDS = 5.0


def model_key(folder: Path) -> tuple[str, int]:
    """What identifies a model on disk: its folder and its weights' mtime."""
    try:
        return str(Path(folder).resolve()), (Path(folder) / WEIGHTS).stat().st_mtime_ns
    except OSError:
        return str(folder), 0


class ChampionWatch:
    """Poll locate(queue) for each queue; swap a changed model, loaded by load(queue, folder), into the pipeline."""

    def __init__(self, pipeline: Pipeline, queues: list[str], locate: Callable[[str], Path],
                 load: Callable[[str, Path], Predictor], interval: float = POLL_SECONDS,
                 on_swap: Callable[[str, Predictor], None] | None = None):
        self.pipeline, self.queues, self.locate, self.load = pipeline, queues, locate, load
        self.interval, self.on_swap = interval, on_swap
        self.current = {q: model_key(pipeline.predictor(q).model.path or locate(q)) for q in queues}
        self._refused: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for q in self.queues:
                try:
                    self.check(q)
                except Exception:
                    logger.exception("queue {}: checking for a new model failed; keeping the running one", q)

    def check(self, q: str) -> bool:
        """Swap in q's model if it changed on disk; True if it did."""
        folder = self.locate(q)
        key = model_key(folder)
        if key == self.current[q] or key in self._refused:
            return False
        old = self.pipeline.predictor(q)
        t = time.perf_counter()
        try:
            new = self.load(q, folder)
        except (CheckpointError, ValueError, OSError, RuntimeError) as e:
            if passing(e):   # out of file handles: no fault of the model; looked at again at the next poll
                logger.warning("queue {}: cannot check the new model in {} now ({}); trying again in {:g} s, "
                               "version {} keeps serving", q, folder, e, self.interval, old.version)
                return False
            self._refused.add(key)
            logger.error("queue {}: the new model in {} does not load ({}); keeping version {}",
                         q, folder, e, old.version)
            return False
        self.pipeline.swap(q, new)
        self.current[q] = key
        logger.info("queue {}: model version {} swapped in (was {}), from {}, loaded in {:.0f} ms",
                    q, new.version, old.version, folder, 1000 * (time.perf_counter() - t))
        if self.on_swap:
            self.on_swap(q, new)
        return True
