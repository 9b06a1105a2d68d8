"""The pipeline's small parts: worker pools, named file bytes, delayed retries, telling out-of-memory apart."""

from __future__ import annotations

import io
import queue
import threading
import time

import torch
from loguru import logger


class Pool:
    """A few worker threads on a queue of callables; close() drops what has not started."""

    def __init__(self, name: str, n: int):
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.name, self._made = name, n
        self._retired: set[threading.Thread] = set()   # stuck in a task, replaced: they end when it returns
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def replace(self, thread: threading.Thread) -> None:
        """thread is stuck in a task: start another in its place; thread ends once its task returns."""
        with self._lock:
            if thread not in self.threads:
                return
            self._retired.add(thread)
            self.threads.remove(thread)
            t = threading.Thread(target=self._work, name=f"{self.name}-{self._made}", daemon=True)
            self._made += 1
            self.threads.append(t)
        t.start()

    def submit(self, fn, *args) -> None:
        self.q.put((fn, args))

    def _work(self) -> None:
        while (task := self.q.get()) is not None:
            fn, args = task
            try:
                fn(*args)
            except Exception:  # a bug in one task must not kill the thread
                logger.exception("internal error in {}", threading.current_thread().name)
            with self._lock:
                if threading.current_thread() in self._retired:
                    self._retired.discard(threading.current_thread())
                    return

    def close(self, drop: bool) -> None:
        if drop:
            while True:
                try:
                    self.q.get_nowait()
                except queue.Empty:
                    break
        for _ in self.threads:
            self.q.put(None)

    def join(self, deadline: float) -> bool:
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


class Named(io.BytesIO):
    """File bytes that Pillow's messages call by the file's name, not by an object address."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.shown = name

    def __repr__(self) -> str:
        return repr(self.shown)


def later(delay: float, fn) -> None:
    """Call fn on a daemon timer thread after delay seconds (a retry that must not block a worker)."""
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory"))
