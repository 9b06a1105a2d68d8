"""Large images: a flood of them stays within the memory budget (plus the service's own baseline), nothing is
killed, and the memory is given back once the flood is done."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.accounting import account, settled
from tests.support.rig import Rig, peak_rss_kb, poll

MB = 1 << 20
IDLE_KB = 100 * 1024   # once idle, the service holds at most this much more than before the flood


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def flat_gray_jpeg(megapixels: float) -> bytes:
    """A near-flat gray JPEG (a scan of a blank page): a few hundred bytes per megapixel to read, all of its
    pixels to decode."""
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    small = np.random.default_rng(0).integers(110, 146, (h // 256 + 1, w // 256 + 1), dtype=np.uint8)
    im = Image.fromarray(small, "L").resize((w, h), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def flood_of_large_images(tmp_path: Path, models, env, n: int, megapixels: float, budget_mb: int,
                          timeout: float) -> dict:
    rig = Rig(tmp_path, {"colorize": models["colorize"]}, env,
              f"[runtime]\nmax_batch = 4\nqueue_size = 64\nmemory_budget_mb = {budget_mb}\n"
              "[limits]\nmax_pixels = 200000000\n")
    data = flat_gray_jpeg(megapixels)
    stage = tmp_path / "stage"
    stage.mkdir()
    t0 = time.monotonic()
    try:
        child = rig.start()
        time.sleep(1.0)
        base_peak, base_rss = peak_rss_kb(child.proc.pid), rss_kb(child.proc.pid)
        names = []
        for i in range(n):   # all at once: written beside the inbox, renamed in
            name = f"big{i:03d}_before.jpg"
            (stage / name).write_bytes(data)
            names.append(name)
        for name in names:
            os.rename(stage / name, rig.inbox() / name)
        poll(lambda: settled(rig) >= n or not rig.alive(), timeout, f"{n} large images done", rig, every=0.5)
        alive = rig.alive()
        peak = peak_rss_kb(child.proc.pid)
        # Given back once idle (a trim a second after the pipeline drains).
        deadline = time.monotonic() + 10
        while alive and time.monotonic() < deadline and rss_kb(child.proc.pid) > base_rss + IDLE_KB:
            time.sleep(0.2)
        idle = rss_kb(child.proc.pid) if alive else 0
        if alive:
            assert rig.stop() == 0
        tally = account(rig, names)
    finally:
        rig.close()
    return dict(tally=tally, alive=alive, base_peak=base_peak, base_rss=base_rss, peak=peak, idle=idle,
                log=rig.log(), seconds=time.monotonic() - t0, rig=rig)


@pytest.mark.parametrize("n, megapixels, budget_mb, timeout", [
    pytest.param(8, 24, 256, 180, id="8x24MP-256MiB"),
    pytest.param(64, 100, 4096, 1800, id="64x100MP-4GiB", marks=pytest.mark.soak),
])
def test_a_flood_of_large_images_stays_within_the_memory_budget(tmp_path, tiny_models, service_env, record,
                                                                n, megapixels, budget_mb, timeout):
    got = flood_of_large_images(tmp_path, tiny_models, service_env, n, megapixels, budget_mb, timeout)
    tally = got["tally"]
    record(f"{n} near-flat gray JPEGs of {megapixels} MP at once, memory budget {budget_mb} MiB "
           f"(baseline {got['base_peak'] / 1024:.0f} MB, idle after {got['idle'] / 1024:.0f} MB)",
           f"{n} files", len(tally.lost), len(tally.twice), got["peak"], got["seconds"])
    assert got["alive"], f"the service died:\n{got['log'][-3000:]}"
    assert tally.converted == n and tally.lost == [] and tally.twice == [] and tally.quarantined == 0
    assert f"memory budget for decoded images in flight: {budget_mb / 1024:.1f} GiB (configured" in got["log"]
    over = got["peak"] - got["base_peak"]
    assert over <= budget_mb * 1024, (f"peak RSS {got['peak'] / 1024:.0f} MB is {over / 1024:.0f} MB over the "
                                      f"baseline, beyond the budget of {budget_mb} MiB")
    assert got["idle"] <= got["base_rss"] + IDLE_KB, (
        f"{got['idle'] / 1024:.0f} MB still resident once idle (baseline {got['base_rss'] / 1024:.0f} MB)")


def test_an_image_larger_than_the_whole_budget_runs_alone(tmp_path, tiny_models, service_env):
    got = flood_of_large_images(tmp_path, tiny_models, service_env, 3, 24, 64, 180)
    assert got["alive"] and got["tally"].converted == 3, got["log"][-3000:]
    assert got["log"].count("more than the budget of 0.1 GiB") >= 3 and "runs alone" in got["log"]
    # One at a time: 24 MP gray costs about 180 MB at its peak; three at once would be over 400.
    assert got["peak"] - got["base_peak"] <= 300 * 1024


def test_files_taken_back_after_a_kill_go_through_the_same_budget(tmp_path, tiny_models, service_env, record):
    # The crash loop of issue 13: killed with files in work/, the next start took them all back at once.
    n, budget_mb = 10, 256
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env,
              f"[runtime]\nmax_batch = 4\nqueue_size = 64\nmemory_budget_mb = {budget_mb}\n")
    data = flat_gray_jpeg(24)
    stage = tmp_path / "stage"
    stage.mkdir()
    names = [f"big{i:03d}_before.jpg" for i in range(n)]
    t0 = time.monotonic()
    try:
        first = rig.start()
        time.sleep(1.0)
        base = peak_rss_kb(first.proc.pid)   # the baseline, before any image: the restart's is the same
        for name in names:
            (stage / name).write_bytes(data)
            os.rename(stage / name, rig.inbox() / name)
        poll(lambda: settled(rig) >= 2, 120, "two images done", rig, every=0.05)
        rig.kill9()
        left = len(os.listdir(rig.work()))
        child = rig.start()
        poll(lambda: settled(rig) >= n or not rig.alive(), 180, f"all {n} done after the restart", rig)
        peak = peak_rss_kb(child.proc.pid)
        assert rig.alive() and rig.stop() == 0
        tally = account(rig, names)
    finally:
        rig.close()
    record(f"kill -9 during a flood of 24 MP images, restart taking {left} back, budget {budget_mb} MiB",
           f"{n} files", len(tally.lost), len(tally.twice), peak, time.monotonic() - t0)
    assert left >= 3, f"the kill left only {left} file(s) in work/"
    assert tally.converted == n and tally.lost == [] and tally.twice == []
    assert "recovering" in rig.runs[-1].log()
    assert peak - base <= budget_mb * 1024, f"the restart peaked {(peak - base) / 1024:.0f} MB over its baseline"
