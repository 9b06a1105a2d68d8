"""max_batch = "auto": measure images/s for a few batch sizes on the device at start-up and take the best.

On a small CPU batch 1 usually wins per image (the convolutions already use
every core, and a bigger batch only adds cache misses and waiting); on a GPU
larger batches win until the device is busy. Measuring beats guessing, but
one timing per size on a busy machine is noise (five starts on one machine
chose 16, 1, 2, 1 and 1). So each size is warmed up, then timed several
times in interleaved rounds (a slow spell of the machine hits every size,
not one), and its rate is the median. The choice is kept in the state folder
(KEPT_FILE, per device, task, working size and network size). A start that
finds a kept choice takes it at once (kept_choice: Ready in seconds), and the
service measures again once it is idle, keeping the choice unless another
size is clearly faster (CLEARLY: over 10%).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from loguru import logger

from unet import Predictor
from unet.tasks import Prepared

from ...core.fs import now_iso, write_json

CPU_SIZES = (1, 2, 4, 8, 16)
GPU_SIZES = (1, 2, 4, 8, 16, 32, 64)
TYPICAL = (1536, 1024)   # a 3:2 photo: the working size most inputs get
MIN_RUNS, MAX_RUNS = 5, 15   # timed passes per size (after a warm-up), budget allowing
CLEARLY = 1.10           # a kept choice is given up only for a size this much faster
NEAR_BEST = 0.95         # a fresh choice: the smallest size within 5% of the best (lower latency)
KEPT_FILE = "autobatch.json"
KEPT_MAX = 32            # machines-and-models kept in it, the most recent
MEASURE_FROM = 32        # files: a run over fewer (reverser convert) is not worth measuring for


class Choice(NamedTuple):
    size: int
    why: str     # one short line: images/s by size and how the choice was made
    measured: bool = True   # False: an earlier start's choice, taken without measuring (kept_choice)


def kept_choice(predictor: Predictor, kept_file: Path) -> Choice | None:
    """The choice an earlier start kept for this predictor on its device, without measuring; None if none."""
    entry = _read_kept(kept_file).get(_key(predictor))
    n = entry.get("batch") if isinstance(entry, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return None
    return Choice(n, f"{n} kept from the start of {entry.get('measured', 'an earlier run')}; measured again "
                     f"once the service is idle", measured=False)


def choose(rates: dict[int, float], kept: int | None) -> tuple[int, str]:
    """The batch size for these images/s by size, and how it was chosen: the kept choice unless another
    size is over CLEARLY faster, else the smallest size within NEAR_BEST of the best."""
    best = max(rates.values())
    fresh = min(n for n, r in rates.items() if r >= NEAR_BEST * best)
    if kept in rates:
        if best <= CLEARLY * rates[kept]:
            return kept, f"{kept} kept"
        return fresh, f"{fresh}: >{CLEARLY - 1:.0%} over kept {kept}"
    return fresh, f"{fresh} chosen"


def measure(predictor: Predictor, sizes: tuple[int, ...] | None = None, seconds_each: float = 0.4,
            budget: float = 20.0, kept_file: Path | None = None) -> Choice:
    """Return (best batch size, one line of figures) for this predictor on its device.

    budget bounds the whole measurement in seconds: on a slow CPU a batch of 16
    can take seconds per pass, and start-up must not wait a minute for it.
    kept_file: where the choice is kept between starts (see the module docstring).
    """
    key = _key(predictor)
    entry = _read_kept(kept_file).get(key) if kept_file else None
    kept = entry.get("batch") if isinstance(entry, dict) else None
    rates, note = on_a_thread(_measure, predictor, sizes, seconds_each, budget, kept)
    n, how = choose(rates, kept)
    why = f"images/s by size {' '.join(f'{k}:{_fig(r)}' for k, r in rates.items())}; {how}"
    logger.debug("batch size {} for {}: {}{}", n, key, why, note)
    if kept_file is not None:
        _keep(kept_file, key, n, rates)
    return Choice(n, why)


class BatchSizes:
    """The service's max_batch = "auto" choices: measured at a first start; an earlier start's choice taken at
    once and measured again once the service is idle (idle()), each such result told to measured(queue,
    predictor, Choice). A reload with the same network on the same device measures nothing."""

    POLL_SECONDS = 1.0   # how often it looks whether the service is idle
    BUDGET = 5.0         # seconds one measuring again may take (a first start's may take 20)

    def __init__(self, kept_file: Path, idle: Callable[[], bool], measured: Callable[[str, Predictor, Choice], None]):
        self.kept_file, self.idle, self.measured = kept_file, idle, measured
        self._chosen: dict[str, Choice] = {}
        self._todo: list[tuple[str, Predictor]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def choose(self, queue: str, predictor: Predictor) -> Choice:
        key = _key(predictor)
        if key not in self._chosen:
            kept = kept_choice(predictor, self.kept_file)   # an earlier start's: Ready without measuring
            self._chosen[key] = kept or measure(predictor, kept_file=self.kept_file)
            if kept is not None:
                self._todo.append((queue, predictor))
        return self._chosen[key]

    def start(self) -> None:
        """Measure again what was kept, if anything, on one thread (after Ready: a start, a reload)."""
        if self._todo and (self._thread is None or not self._thread.is_alive()):
            self._thread = threading.Thread(target=self._run, name="remeasure", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No more measuring; one under way is waited for (torch must not be running when the process ends)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.BUDGET * 4)

    def _run(self) -> None:
        while self._todo and not self._stop.wait(self.POLL_SECONDS):
            if not self.idle():
                continue
            queue, predictor = self._todo.pop(0)
            choice = self._chosen[_key(predictor)] = measure(predictor, budget=self.BUDGET, kept_file=self.kept_file)
            logger.info("queue {}: batch size {}, measured again while idle: {}", queue, choice.size, choice.why)
            self.measured(queue, predictor, choice)


def for_files(predictor: Predictor, files: int, kept_file: Path) -> Choice:
    """max_batch = "auto" for a run over some files (reverser convert): the service's kept choice for this
    network on this device where there is one; else measured and kept, unless the files are too few
    (under MEASURE_FROM) for measuring to pay: then 1."""
    kept = kept_choice(predictor, kept_file)
    if kept is not None:
        return kept
    if files < MEASURE_FROM:
        return Choice(1, f"1: {files} file(s), too few to measure for", measured=False)
    return measure(predictor, kept_file=kept_file)


def on_a_thread(fn, *args):
    """fn(*args) on a fresh thread, as the pipeline's batcher runs the model.

    CPU speed differs between the main thread and others (OpenMP keeps per-thread
    state; on a busy 2-core machine batch 1 ran several times slower on the main
    thread), so the model is measured where it will run.
    """
    out = {}

    def target():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # re-raised on the caller's thread
            out["error"] = e

    t = threading.Thread(target=target, name="measure")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _measure(predictor: Predictor, sizes, seconds_each: float, budget: float,
             kept: int | None = None) -> tuple[dict[int, float], str]:
    """(images/s by size, a note on sizes left out): the median of several timed passes per size; the kept
    size is measured too where the first round stopped short of it."""
    sizes = sizes or (GPU_SIZES if predictor.cuda else CPU_SIZES)
    task = predictor.task
    h, w = task.shape_for(TYPICAL)
    gen = torch.Generator().manual_seed(0)
    item = Prepared(torch.randn(task.in_channels, h, w, generator=gen), (h, w), None)
    times: dict[int, list[float]] = {}
    note, start = "", time.perf_counter()
    # First round: each size warmed up and timed once, smallest first, until they stop paying.
    for n in sizes:
        if times:
            # A warm-up and MIN_RUNS passes at the last size's rate, scaled to n.
            last = max(times)
            cost = (1 + MIN_RUNS) * times[last][0] * n / last
            if time.perf_counter() - start + cost > budget:
                note = f"; larger sizes not tried (measuring them would pass the {budget:g} s budget)"
                break
        try:
            predictor.run([item] * n)  # warm-up: first-call allocations and kernel selection
            times[n] = [_timed(predictor, [item] * n)]
        except RuntimeError as e:  # out of memory: larger sizes will not fit either
            if predictor.cuda:
                torch.cuda.empty_cache()
            note = f"; {n} did not fit ({str(e).splitlines()[0][:60]})"
            break
        rates = {k: k / t[0] for k, t in times.items()}
        # Past the peak and falling: larger batches will not win back.
        if len(rates) >= 3 and rates[n] < 0.8 * max(rates.values()):
            break
    if kept in sizes and kept not in times and times:
        last = max(times)
        if time.perf_counter() - start + (1 + MIN_RUNS) * times[last][0] * kept / last <= budget:
            try:
                predictor.run([item] * kept)
                times[kept] = [_timed(predictor, [item] * kept)]
            except RuntimeError:
                if predictor.cuda:
                    torch.cuda.empty_cache()
    if not times:
        return {1: 0.0}, note   # not even one image fits: batch 1, and the pipeline says why when it runs
    # Then rounds over all sizes in turn, so that a slow spell of the machine hits every size alike.
    while True:
        runs = min(len(t) for t in times.values())
        spent = min(sum(t) for t in times.values())
        round_cost = sum(statistics.median(t) for t in times.values())
        if runs >= MAX_RUNS or (runs >= MIN_RUNS and spent >= seconds_each) \
                or time.perf_counter() - start + round_cost > budget:
            break
        for n, t in times.items():
            t.append(_timed(predictor, [item] * n))
    return {n: n / statistics.median(t) for n, t in sorted(times.items())}, note


def _timed(predictor: Predictor, items: list[Prepared]) -> float:
    t = time.perf_counter()
    predictor.run(items)  # returns CPU tensors, so the device has finished
    return time.perf_counter() - t


def _fig(rate: float) -> str:
    """images/s in three figures or so, to keep the line short: 0.42, 3.14, 31.4, 314, 3.1k, 31k."""
    if rate >= 1000:
        return f"{rate / 1000:.1f}k" if rate < 10_000 else f"{rate / 1000:.0f}k"
    return f"{rate:.0f}" if rate >= 100 else f"{rate:.1f}" if rate >= 10 else f"{rate:.2f}"


def _key(predictor: Predictor) -> str:
    """What a kept choice is for: the device, the task at its working size, and the network's size."""
    h, w = predictor.task.shape_for(TYPICAL)
    params = sum(p.numel() for p in predictor.net.parameters())
    return f"{predictor.device} {predictor.task.name} {w}x{h} {params} parameters"


def _read_kept(path: Path) -> dict:
    try:
        kept = json.loads(Path(path).read_text(encoding="utf-8"))
        return kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        return {}   # none kept yet, or unreadable: measured afresh


def _keep(path: Path, key: str, n: int, rates: dict[int, float]) -> None:
    """Keep the choice (atomically: temp name, fsync, rename), the KEPT_MAX most recent keys."""
    kept = _read_kept(path)
    kept.pop(key, None)
    kept[key] = {"batch": n, "images_per_s": {str(k): round(r, 3) for k, r in rates.items()},
                 "measured": now_iso()}
    recent = dict(sorted(kept.items(), key=lambda kv: str(kv[1].get("measured", "")))[-KEPT_MAX:]) \
        if len(kept) > KEPT_MAX else kept
    try:
        write_json(Path(path), recent)
    except OSError as e:   # a full or read-only state disk: measured afresh next time, nothing worse
        logger.debug("cannot keep the batch size in {}: {}", path, e)
