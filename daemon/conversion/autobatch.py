"""max_batch = "auto": measure images/s for a few batch sizes on the device at start-up and take the best.

On a small CPU batch 1 usually wins per image (the convolutions already use
every core, and a bigger batch only adds cache misses and waiting); on a GPU
larger batches win until the device is busy. Measuring beats guessing.
"""

from __future__ import annotations

import statistics
import threading
import time

import torch

from unet import Predictor
from unet.tasks import Prepared

CPU_SIZES = (1, 2, 4, 8, 16)
GPU_SIZES = (1, 2, 4, 8, 16, 32, 64)
TYPICAL = (1536, 1024)   # a 3:2 photo: the working size most inputs get


def measure(predictor: Predictor, sizes: tuple[int, ...] | None = None,
            seconds_each: float = 0.4, budget: float = 20.0) -> tuple[int, str]:
    """Return (best batch size, the reason in words) for this predictor on its device.

    budget bounds the whole measurement in seconds: on a slow CPU a batch of 16
    can take seconds per pass, and start-up must not wait a minute for it.
    """
    return on_a_thread(_measure, predictor, sizes, seconds_each, budget)


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


def _measure(predictor: Predictor, sizes, seconds_each: float, budget: float) -> tuple[int, str]:
    sizes = sizes or (GPU_SIZES if predictor.cuda else CPU_SIZES)
    task = predictor.task
    h, w = task.shape_for(TYPICAL)
    gen = torch.Generator().manual_seed(0)
    item = Prepared(torch.randn(task.in_channels, h, w, generator=gen), (h, w), None)
    rates: dict[int, float] = {}
    note, start = "", time.perf_counter()
    for n in sizes:
        if rates:
            # Three passes (a warm-up and two timed) at the last rate, scaled to n.
            cost = 3 * n / rates[max(rates)]
            if time.perf_counter() - start + cost > budget:
                note = f"; larger sizes not tried (measuring them would pass the {budget:g} s budget)"
                break
        try:
            rates[n] = _rate(predictor, [item] * n, seconds_each)
        except RuntimeError as e:  # out of memory: larger sizes will not fit either
            if predictor.cuda:
                torch.cuda.empty_cache()
            note = f"; {n} did not fit ({str(e).splitlines()[0][:60]})"
            break
        # Past the peak and falling: larger batches will not win back.
        if len(rates) >= 3 and rates[n] < 0.8 * max(rates.values()):
            break
    best = max(rates.values())
    # The smallest size within 5% of the best: near-equal throughput at lower latency.
    choice = min(n for n, r in rates.items() if r >= 0.95 * best)
    table = ", ".join(f"{n}: {r:.1f}" for n, r in rates.items())
    why = (f"measured on {predictor.device} at {w}x{h}, images/s by batch size {table}{note}; "
           f"{choice} is the smallest within 5% of the best")
    return choice, why


def _rate(predictor: Predictor, items: list[Prepared], seconds: float) -> float:
    predictor.run(items)  # warm-up: first-call allocations and kernel selection
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < 2 or (time.perf_counter() < deadline and len(times) < 20):
        t = time.perf_counter()
        predictor.run(items)  # returns CPU tensors, so the device has finished
        times.append(time.perf_counter() - t)
    return len(items) / statistics.median(times)
