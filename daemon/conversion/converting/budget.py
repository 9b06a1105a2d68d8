"""The memory budget of the pipeline: what one image costs in flight, and a first-come budget of bytes.

Files in flight are bounded by count (queue_size) and by bytes: before an
image is decoded, its cost is estimated from its header (width, height,
bands) and taken from the budget, and given back when its outcome is known.
A decode thread waits for its turn, first come first served, so decoding
never runs further ahead of encoding than the budget allows. An image that
costs more than the whole budget waits until nothing else is held, and then
runs alone. While a file waits for room, each image given back is given back
to the system as well (malloc_trim), so the budget holds for the resident
memory, not only for the estimate.

The costs are peak bytes per pixel measured for one image going through
decode, prepare, forward, finish and encode with the shipped models (2-core
x86-64, Pillow 11, `bench/memory_bench.py --probe`), rounded up: the decoded
image, the copies the task makes, the result and its encoding. A translate
result is finished a strip of rows at a time, whose buffers grow with the
width, not the height. A 16-bit input whose result is finished at 16 bits
(a PNG or TIFF result) costs more: DEEP, and DEEP_COLOR more for color.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Callable

from loguru import logger
from PIL import Image

from unet.deepread import is_deep, tiff_alone_header
from unet.tiffchain import FromPage

from ...core import memory
from .encode import keeps_depth
from .jobs import Job
from .workers import Named

# Bytes per pixel at the peak, by task and whether the input is gray or color (measured, rounded up).
PER_PIXEL = {("colorize", "gray"): 8.0, ("colorize", "color"): 12.0,
             ("translate", "gray"): 12.0, ("translate", "color"): 12.0}
PER_COLUMN = {"colorize": 0, "translate": 64 * 1024}   # strip buffers, per pixel of width
ALPHA = 3.0          # an alpha band kept aside, merged back and encoded
HIGH_DEPTH = 4.0     # 16- and 32-bit or float inputs: their samples, read once more to scale them to 8 bits
# More for a 16-bit input finished at 16 bits: its samples kept beside the 8-bit copy, a 16-bit result (6 bytes
# a pixel in color) and its file. Measured: colorize 16-bit gray PNG 20.5 and 15.5 at 12 and 48 MP (TIFF 18.0,
# 15.5) against 12 estimated before; reverse 31.2 and 16.9, under its estimate already.
DEEP = {"colorize": 9.0, "translate": 4.0}
# And more for a 16-bit color master (a TIFF or PNG): its samples take 6 bytes a pixel where gray ones take 2.
# Measured (three runs each): colorize 16-bit color PNG 26.6-28.9 and TIFF (deflate, LZW) 27.0-30.4 at 12 MP,
# 24.1-24.3 at 48 MP, against 21.1 estimated before; reverse PNG 38.1-41.1 and TIFF 35.5-38.3 at 12 MP (37.9
# estimated), 23.9-26.0 at 48 MP (26.9).
DEEP_COLOR = {"colorize": 9.0, "translate": 3.5}
# And more for a 16-bit input with alpha (RGBA, or gray and alpha) colorized at 16 bits: its alpha samples and
# the result with the alpha put beside its color (8 bytes a pixel). Measured (bench/memory_bench.py --probe):
# colorize RGBA PNG 38.7 and 36.3 at 12 and 48 MP, RGBA TIFF 40.0 and 34.7 (33.1 estimated without this),
# gray-and-alpha TIFF 29.7 and 27.1 (20.1); reverse stays under its estimate already (RGBA TIFF 41.5 of 44.4).
DEEP_ALPHA = {"colorize": 11.0, "translate": 0.0}
# And more for a TIFF Pillow cannot open, which tifffile decodes (unet.deepread.tiff_alone): its codec's own
# buffers (openjpeg decodes into 32-bit planes). Measured (the probe, JPEG 2000 TIFFs, 8-bit): colorize gray
# 10.3 and 11.0 at 12 and 48 MP (8.1 estimated without this), color 16.0 and 15.0 (12.1); reverse stays under
# its estimate already (gray 33.6 of 33.9, color 32.1).
ALONE = 5.0
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def image_cost(task: str, width: int, height: int, mode: str, deep: bool = False, alone: bool = False) -> int:
    """Estimated peak bytes of one image of this size and (Pillow) mode going through a task's queue;
    deep: a 16-bit input (unet.deepread.is_deep) whose result may be finished at 16 bits; alone: a TIFF that
    tifffile reads, Pillow cannot (unet.deepread.tiff_alone_header)."""
    px = width * height
    per = PER_PIXEL.get((task, "gray" if mode in GRAY_MODES else "color"), 12.0)
    if "A" in mode or mode == "P":   # P may carry transparency
        per += ALPHA
    if mode.startswith("I") or mode == "F":
        per += HIGH_DEPTH
    if deep:
        per += DEEP.get(task, 9.0) + (0.0 if mode in GRAY_MODES else DEEP_COLOR.get(task, 9.0))
        per += DEEP_ALPHA.get(task, 11.0) if "A" in mode else 0.0
    if alone and task == "colorize":
        per += ALONE
    return int(px * per + width * PER_COLUMN.get(task, 64 * 1024)) + (1 << 20)


class MemoryBudget:
    """Bytes that may be held at once, taken in turn (first come, first served); see the module docstring."""

    def __init__(self, limit: int, on_pressure: Callable[[], object] | None = None):
        """on_pressure() runs when bytes are given back while someone waits for room (before they get it):
        the pipeline gives freed memory back to the system then, so the next image fits in fact too."""
        self.limit = limit          # 0: no limit
        self.on_pressure = on_pressure
        self.used = 0
        self.peak = 0               # the most ever held at once, for tests and the status
        self._turns: deque = deque()
        self._cond = threading.Condition()
        self._closed = False

    def take(self, n: int, timeout: float | None = None) -> bool:
        """Wait for n bytes (for everything else to be given back, when n is over the limit); False when
        closed or on timeout."""
        if not self.limit:
            return not self._closed
        me = object()
        with self._cond:
            self._turns.append(me)
            try:
                ok = self._cond.wait_for(lambda: self._closed or (
                    self._turns[0] is me and (self.used == 0 or self.used + n <= self.limit)), timeout)
            finally:
                self._turns.remove(me)
                self._cond.notify_all()
            if self._closed or not ok:
                return False
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def give(self, n: int) -> None:
        if not self.limit or not n:
            return
        with self._cond:
            waiting = bool(self._turns)
        if waiting and self.on_pressure is not None:
            self.on_pressure()   # the caller has let go of the image: its freed buffers go back first
        with self._cond:
            self.used -= n
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter with False: the pipeline is closing."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def admit(budget: MemoryBudget, job: Job, data: bytes, task: str, max_pixels: int, page: int = 0) -> bool:
    """Wait for the image's estimated cost in budget (from its header; a multi-page TIFF's page's own, page
    the offset of its IFD as in Plain.pages),
    noted as job.memory; False when closing. A header that does not parse costs its file's size here:
    decoding it fails at once."""
    if not budget.limit:
        return True
    keeps = keeps_depth(Path(job.out_name).suffix)   # a 16-bit input is finished at 16 bits
    try:
        with Image.open(FromPage(data, page) if page else Named(data, "")) as im:   # a page: read as the first
            size, cost = im.size, image_cost(task, im.width, im.height, im.mode, is_deep(im) and keeps)
    except Exception:
        header = tiff_alone_header(FromPage(data, page) if page else Named(data, ""))   # a TIFF that Pillow cannot open, read by tifffile
        if header is None:
            size, cost = None, len(data)
        else:
            w, h, mode, deep = header
            size, cost = (w, h), image_cost(task, w, h, mode, deep and keeps, alone=True)
    if size and size[0] * size[1] > max_pixels:
        return True   # refused from its header at once (a decompression bomb): it costs nothing
    if cost > budget.limit:
        logger.info("{}: {} needs about {} of memory, more than the budget of {} ([runtime] "
                    "memory_budget_mb); it waits for the files in flight and runs alone",
                    job.label or job.path.name, "%dx%d" % size if size else "it", memory.gib(cost),
                    memory.gib(budget.limit))
    if not budget.take(cost):
        return False
    job.memory = cost
    return True
