"""The memory budget: what an image costs in flight, first come first served, one too large runs alone."""

from __future__ import annotations

import threading
import time

import numpy as np
from PIL import Image

from daemon.conversion.converting.budget import MemoryBudget, image_cost
from daemon.conversion.converting.pipeline import Job, Pipeline, PipelineSettings
from tests.daemon.conversion.test_pipeline import SETTINGS, Outcomes, colorizer  # noqa: F401 (fixture)
from tests.support.images import make_image
from tests.support.service import captured_logs, wait_for

MB = 1 << 20


def test_an_image_costs_by_its_pixels_bands_and_task():
    gray, color = image_cost("colorize", 4000, 3000, "L"), image_cost("colorize", 4000, 3000, "RGB")
    assert 12e6 * 7 < gray < color < 12e6 * 13
    assert image_cost("translate", 4000, 3000, "L") > color           # translate's strips grow with the width
    assert image_cost("colorize", 4000, 3000, "I;16") > gray          # 16-bit samples are read once more
    # ... and finished at 16 bits (a PNG or TIFF result) they cost what the probe measured: 20.5 a pixel
    assert image_cost("colorize", 4000, 3000, "I;16", deep=True) > 12e6 * 20.5
    # a 16-bit color master keeps 6 bytes a pixel of samples, not 2: the probe measured up to 30.4 and 41.1
    assert image_cost("colorize", 4000, 3000, "RGB", deep=True) > 12e6 * 30.0
    assert image_cost("translate", 4000, 3000, "RGB", deep=True) > 12e6 * 41.0
    assert image_cost("colorize", 4000, 3000, "LA") > gray            # and an alpha band travels beside


def test_a_16_bit_color_png_or_lzw_tiff_is_admitted_at_the_cost_of_the_16_bit_tiff(tmp_path):
    """Its 16-bit samples are kept (with imagecodecs), so its header's estimate counts them, as for a deflate
    TIFF; a JPEG result keeps 8 bits, and so does its estimate."""
    import tifffile

    from daemon.conversion.converting.budget import admit
    from daemon.conversion.converting.encode16 import encode16
    from tests.support.deep import color16, png16

    rgb = color16((400, 300))
    files = {"png.png": encode16(rgb, "PNG", None, None), "interlaced.png": png16(rgb, interlace=True)}
    for name, compression in (("deflate.tif", "zlib"), ("lzw.tif", "lzw")):
        tifffile.imwrite(tmp_path / name, rgb, photometric="rgb", compression=compression)
        files[name] = (tmp_path / name).read_bytes()
    buf = tmp_path / "eight.png"
    Image.fromarray((rgb >> 8).astype("uint8")).save(buf)
    files["eight.png"] = buf.read_bytes()

    def cost(name: str, out_ext: str) -> int:
        job = Job("q", tmp_path / name, tmp_path, "x_after" + out_ext, lambda *a: None)
        budget = MemoryBudget(1 << 40)
        assert admit(budget, job, files[name], "colorize", 10**9)
        return job.memory

    deep = image_cost("colorize", 400, 300, "RGB", deep=True)
    assert {cost(n, ext) for n in files if n != "eight.png" for ext in (".png", ".tif")} == {deep}
    assert cost("eight.png", ".png") == cost("png.png", ".jpg") == image_cost("colorize", 400, 300, "RGB") < deep


def test_takers_wait_their_turn_and_one_larger_than_the_budget_runs_alone():
    budget = MemoryBudget(100 * MB)
    assert budget.take(60 * MB)
    order, threads = [], []

    def taker(name, n):
        assert budget.take(n)
        order.append((name, budget.used // MB))

    for name, n in (("big", 150 * MB), ("small", 10 * MB)):   # the small one comes second: it waits its turn
        t = threading.Thread(target=taker, args=(name, n))
        t.start()
        threads.append(t)
        time.sleep(0.1)
    assert order == [] and not budget.take(1, timeout=0.1), "nobody passes the big one waiting for room"
    budget.give(60 * MB)                     # nothing else held now: the big one runs, alone
    wait_for(lambda: order, 5, "the big one to start")
    time.sleep(0.1)
    assert order == [("big", 150)]
    budget.give(150 * MB)
    for t in threads:
        t.join(5)
    assert order == [("big", 150), ("small", 10)] and budget.peak == 150 * MB


def test_closing_wakes_a_waiter_with_false():
    budget = MemoryBudget(10 * MB)
    assert budget.take(10 * MB)
    got = []
    t = threading.Thread(target=lambda: got.append(budget.take(MB)))
    t.start()
    time.sleep(0.05)
    budget.close()
    t.join(5)
    assert got == [False]


def test_the_pipeline_decodes_no_further_ahead_than_its_memory_budget(tmp_path, colorizer):  # noqa: F811
    # Each 1600x1200 gray image costs about 15 MB: a 40 MB budget holds two at once, never more, however
    # many files are in flight by count.
    size = (1600, 1200)
    cost = image_cost("colorize", *size, "L")
    paths = [make_image(tmp_path / f"m{i}_before.png", size, "L", seed=i) for i in range(8)]
    settings = PipelineSettings(**{**SETTINGS.__dict__, "decode_threads": 2, "capacity": 8,
                                   "memory_budget": 40 * MB})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 4}, settings)
    outcomes = Outcomes()
    try:
        for p in paths:
            assert pipe.reserve(timeout=30)
            pipe.submit(Job("colorize", p, tmp_path / "out", p.name.replace("_before", "_after"), outcomes))
        got = outcomes.wait(len(paths))
        assert pipe.wait_idle(10)
    finally:
        pipe.close(time.monotonic() + 5)
    assert all(o.ok for o in got.values())
    assert cost * 2 <= pipe.memory.peak <= 40 * MB and pipe.memory.used == 0


def test_an_image_over_max_pixels_is_refused_at_once_without_waiting_for_memory(tmp_path, colorizer):  # noqa: F811
    big = make_image(tmp_path / "bomb_before.png", (1000, 1000), "L")   # costs 8 MB: 8 times the budget
    settings = PipelineSettings(**{**SETTINGS.__dict__, "memory_budget": MB, "max_pixels": 500_000})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 1}, settings)
    outcomes = Outcomes()
    try:
        with captured_logs() as lines:
            assert pipe.reserve(timeout=10)
            pipe.submit(Job("colorize", big, tmp_path / "out", "bomb_after.png", outcomes))
            got = outcomes.wait(1)["bomb_before.png"]
    finally:
        pipe.close(time.monotonic() + 5)
    assert not got.ok and "over the limit" in got.error
    assert not any("more than the budget" in line for line in lines) and pipe.memory.peak == 0


def test_a_16_bit_input_with_alpha_and_a_tiff_pillow_cannot_open_are_admitted_at_their_measured_cost(tmp_path):
    """What bench/memory_bench.py --probe measured: a colorized 16-bit RGBA TIFF up to 40.0 bytes a pixel,
    a gray-and-alpha TIFF (Pillow cannot open it; its header is read by tifffile) 29.7, a color JPEG 2000
    TIFF (the same) 16.0."""
    from daemon.conversion.converting.budget import admit
    from daemon.conversion.converting.encode16 import encode16
    from tests.support.deep import color16, gray16

    rgb, gray = color16((400, 300)), gray16((400, 300))
    alpha = np.full((300, 400), 40000, np.uint16)
    assert image_cost("colorize", 4000, 3000, "RGBA", deep=True) > 12e6 * 40.0
    assert image_cost("colorize", 4000, 3000, "LA", deep=True) > 12e6 * 29.7
    files = {"rgba.tif": encode16(np.dstack([rgb, alpha]), "TIFF", None, None),
             "ga.tif": encode16(np.dstack([gray, alpha]), "TIFF", None, None)}
    for name, mode in (("rgba.tif", "RGBA"), ("ga.tif", "LA")):
        job = Job("q", tmp_path / name, tmp_path, "x_after.png", lambda *a: None)
        assert admit(MemoryBudget(1 << 40), job, files[name], "colorize", 10**9)
        assert job.memory == image_cost("colorize", 400, 300, mode, deep=True, alone=name == "ga.tif"), name
    # a JPEG 2000 TIFF, which tifffile decodes through its codec's 32-bit planes: measured up to 16.0
    assert image_cost("colorize", 4000, 3000, "RGB", alone=True) > 12e6 * 16.0


def test_a_page_of_a_multi_page_tiff_is_admitted_at_its_own_size(tmp_path):
    import tifffile

    from daemon.conversion.converting.budget import admit

    with tifffile.TiffWriter(tmp_path / "b.tif") as tif:
        tif.write(np.zeros((30, 40), np.uint8), photometric="minisblack")
        tif.write(np.zeros((300, 400), np.uint8), photometric="minisblack")
    data = (tmp_path / "b.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        second = tif.pages[1].offset   # pages are named by their directories' offsets (Plain.pages)
    costs = []
    for page in (0, second):
        job = Job("q", tmp_path / "b.tif", tmp_path, "x_after.tif", lambda *a: None)
        assert admit(MemoryBudget(1 << 40), job, data, "colorize", 10**9, page)
        costs.append(job.memory)
    assert costs == [image_cost("colorize", 40, 30, "L"), image_cost("colorize", 400, 300, "L")]
