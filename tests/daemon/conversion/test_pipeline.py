"""The micro-batching pipeline, in process, with tiny models: batching, failures alone, OOM splits, hot swap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.conversion.converting.pipeline import Job, Pipeline, PipelineSettings
from daemon.conversion.hotswap import ChampionWatch
from tests.support.images import make_image
from tests.support.service import captured_logs, wait_for
from unet import Predictor, load_model, save_model

SETTINGS = PipelineSettings(max_delay_ms=25, decode_threads=1, encode_threads=1, capacity=16,
                            retry_attempts=3, retry_backoff=0.1)


class Outcomes:
    """Collects outcomes by input name."""

    def __init__(self):
        self.by_name = {}
        self.lock = threading.Lock()

    def __call__(self, job, outcome):
        with self.lock:
            assert job.path.name not in self.by_name, f"{job.path.name} got two outcomes"
            self.by_name[job.path.name] = outcome

    def wait(self, n, timeout=60):
        wait_for(lambda: len(self.by_name) >= n, timeout, f"{n} outcomes")
        return self.by_name


@pytest.fixture
def colorizer(tiny_models):
    return Predictor(tiny_models["colorize"], device="cpu")


def run_all(pipeline, paths, out, outcomes, queue="colorize"):
    for p in paths:
        assert pipeline.reserve(timeout=30)
        assert pipeline.submit(Job(queue, p, out, p.stem.replace("_before", "") + "_after" + p.suffix, outcomes))
    return outcomes.wait(len(paths))


def batch_sizes(lines):
    return [int(line.split()[1]) for line in lines if line.startswith("batch: ")]


def test_outputs_have_the_input_size_and_go_where_asked(tmp_path, colorizer):
    paths = [make_image(tmp_path / "in" / f"p{i}_before.png", (60 + 13 * i, 40 + 7 * i), "L", seed=i)
             for i in range(5)]
    calls = []
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 4}, SETTINGS,
                    before_batch=lambda q, n: calls.append("before") or len(calls), after_batch=calls.append)
    try:
        got = run_all(pipe, paths, tmp_path / "out", Outcomes())
    finally:
        pipe.close(time.monotonic() + 5)
    assert calls and calls[0::2] == ["before"] * (len(calls) // 2), "each forward pass is bracketed by the hooks"
    assert calls[1::2] == list(range(1, len(calls), 2))
    for p in paths:
        o = got[p.name]
        assert o.ok and o.output.parent == tmp_path / "out" and o.output.name == p.name.replace("_before", "_after")
        with Image.open(o.output) as im:
            assert im.size == Image.open(p).size and im.mode == "RGB"


def test_a_bad_image_fails_alone_and_its_batch_mates_are_written(tmp_path, colorizer):
    paths = [make_image(tmp_path / f"g{i}_before.png", (64, 48), "L", seed=i) for i in range(6)]
    bad = tmp_path / "bad_before.png"
    bad.write_bytes(b"garbage, not an image" * 20)
    settings = PipelineSettings(**{**SETTINGS.__dict__, "max_delay_ms": 300})  # wait: all share batches
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 8}, settings)
    with captured_logs() as lines:
        try:
            got = run_all(pipe, paths[:3] + [bad] + paths[3:], tmp_path / "out", Outcomes())
        finally:
            pipe.close(time.monotonic() + 5)
    assert not got["bad_before.png"].ok and "cannot decode" in got["bad_before.png"].error
    assert "bad_before.png" in got["bad_before.png"].error  # named by the file, not an object address
    assert all(got[p.name].ok for p in paths)
    assert max(batch_sizes(lines)) > 1, "the good images should have shared a batch"


def test_the_batcher_waits_from_the_first_item_and_groups_by_working_size(tmp_path, colorizer):
    settings = PipelineSettings(**{**SETTINGS.__dict__, "max_delay_ms": 400})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 8}, settings)
    wide = [make_image(tmp_path / f"w{i}_before.png", (96, 48), "L", seed=i) for i in range(3)]
    tall = [make_image(tmp_path / f"t{i}_before.png", (48, 96), "L", seed=i) for i in range(2)]
    outcomes = Outcomes()
    with captured_logs() as lines:
        try:
            for i, p in enumerate(wide + tall):
                assert pipe.reserve()
                pipe.submit(Job("colorize", p, tmp_path / "out", p.name, outcomes))
                if i == 0:
                    time.sleep(0.1)  # later items join the first one's batch while its wait lasts
            outcomes.wait(5)
        finally:
            pipe.close(time.monotonic() + 5)
    assert sorted(batch_sizes(lines)) == [2, 3], lines  # one batch per working size, none waited alone


def test_a_trickle_of_items_does_not_hold_the_first_one_back(tmp_path, colorizer):
    # The wait is counted from the first item queued: items arriving every 100 ms
    # must not keep extending it (a batch of all ten would mean they did).
    settings = PipelineSettings(**{**SETTINGS.__dict__, "max_delay_ms": 250})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 64}, settings)
    paths = [make_image(tmp_path / f"k{i}_before.png", (64, 48), "L", seed=i) for i in range(10)]
    outcomes = Outcomes()
    with captured_logs() as lines:
        try:
            for p in paths:
                assert pipe.reserve()
                pipe.submit(Job("colorize", p, tmp_path / "out", p.name, outcomes))
                time.sleep(0.1)
            outcomes.wait(10)
        finally:
            pipe.close(time.monotonic() + 5)
    sizes = batch_sizes(lines)
    assert sum(sizes) == 10 and len(sizes) >= 2, sizes


def test_an_out_of_memory_batch_is_split_and_every_image_still_written(tmp_path, tiny_models):
    class SmallDevice(Predictor):
        """A device that fits two images at a time: larger batches raise CUDA's out-of-memory error.

        (A real out-of-memory error cannot be produced on demand on this machine.)"""

        def run(self, items):
            if len(items) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().run(items)

    paths = [make_image(tmp_path / f"o{i}_before.png", (64, 48), "L", seed=i) for i in range(8)]
    settings = PipelineSettings(**{**SETTINGS.__dict__, "max_delay_ms": 500})
    pipe = Pipeline({"colorize": SmallDevice(tiny_models["colorize"], device="cpu")}, {"colorize": 8}, settings)
    with captured_logs() as lines:
        try:
            got = run_all(pipe, paths, tmp_path / "out", Outcomes())
        finally:
            pipe.close(time.monotonic() + 5)
    assert all(o.ok for o in got.values())
    assert any("splitting" in line and "out of memory" in line for line in lines)
    assert max(batch_sizes(lines)) <= 2


def test_a_flood_is_held_to_the_capacity_and_nothing_is_lost(tmp_path, colorizer):
    src = make_image(tmp_path / "src.png", (64, 48), "L")
    paths = []
    for i in range(40):
        p = tmp_path / "in" / f"f{i:02d}_before.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(src.read_bytes())
        paths.append(p)
    settings = PipelineSettings(**{**SETTINGS.__dict__, "capacity": 3})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 2}, settings)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(pipe.inflight.values()))
            time.sleep(0.001)

    t = threading.Thread(target=watch)
    t.start()
    try:
        got = run_all(pipe, paths, tmp_path / "out", Outcomes())
    finally:
        stop.set()
        t.join()
        pipe.close(time.monotonic() + 5)
    assert len(got) == 40 and all(o.ok for o in got.values())
    assert 1 <= peak[0] <= 3


def test_a_file_that_appears_late_is_retried_and_one_that_never_does_fails(tmp_path, colorizer):
    late, never = tmp_path / "late_before.png", tmp_path / "never_before.png"
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 1}, SETTINGS)
    outcomes = Outcomes()
    try:
        for p in (late, never):
            pipe.reserve()
            pipe.submit(Job("colorize", p, tmp_path / "out", p.name, outcomes))
        time.sleep(0.05)
        make_image(tmp_path / "tmp.png", (64, 48), "L").rename(late)  # it shows up on a retry
        got = outcomes.wait(2)
    finally:
        pipe.close(time.monotonic() + 5)
    assert got["late_before.png"].ok
    assert not got["never_before.png"].ok and "tried 4 times" in got["never_before.png"].error


def test_limits_refuse_bombs_before_decoding(tmp_path, colorizer):
    big = make_image(tmp_path / "big_before.png", (200, 200), "L")
    settings = PipelineSettings(**{**SETTINGS.__dict__, "max_pixels": 10_000})
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 1}, settings)
    try:
        got = run_all(pipe, [big], tmp_path / "out", Outcomes())
    finally:
        pipe.close(time.monotonic() + 5)
    assert "over the limit" in got["big_before.png"].error and "max_pixels" in got["big_before.png"].error


def _changed_copy(src: Path, dst: Path) -> Path:
    """The same architecture with different weights: a model whose colours differ."""
    model = load_model(src)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.5)
    return save_model(model, dst, version=2)


def test_a_new_champion_is_swapped_in_between_batches(tmp_path, tiny_models, colorizer):
    v2 = _changed_copy(tiny_models["colorize"], tmp_path / "v2")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not weights")
    where = {"colorize": tiny_models["colorize"]}
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 1}, SETTINGS)
    watch = ChampionWatch(pipe, ["colorize"], lambda q: where[q], lambda q, f: Predictor(f, device="cpu"))
    img = make_image(tmp_path / "x_before.png", (64, 48), "L", seed=3)
    outs = []
    try:
        for folder in (tiny_models["colorize"], v2, broken):
            where["colorize"] = folder
            with captured_logs() as lines:
                swapped = watch.check("colorize")
            o = Outcomes()
            pipe.reserve()
            pipe.submit(Job("colorize", img, tmp_path / "out", f"{folder.name}.png", o))
            outs.append(np.asarray(Image.open(o.wait(1)[img.name].output), dtype=float))
            if folder == v2:
                assert swapped and any("version 2 swapped in (was 1)" in line for line in lines)
            if folder == broken:
                assert not swapped and any("does not load" in line and "keeping version 2" in line for line in lines)
    finally:
        pipe.close(time.monotonic() + 5)
    assert pipe.predictor("colorize").version == 2
    assert np.abs(outs[0] - outs[1]).mean() > 1.0, "the new model's output should differ"
    assert np.array_equal(outs[1], outs[2]), "a model that does not load leaves the running one in place"


def test_past_the_close_deadline_nothing_is_written_or_reported(tmp_path, colorizer):
    """A reload takes back the files a pipeline could not finish in time: that pipeline must not
    write them later (the file would be converted twice)."""
    big = make_image(tmp_path / "in" / "big_before.png", (4000, 3000), "L", seed=1)
    outcomes, out = Outcomes(), tmp_path / "out"
    pipeline = Pipeline({"colorize": colorizer}, {"colorize": 1}, SETTINGS)
    assert pipeline.reserve(timeout=30)
    assert pipeline.submit(Job("colorize", big, out, "big_after.png", outcomes))
    wait_for(lambda: pipeline.batches["colorize"] >= 1, 60, "the forward pass", every=0.002)
    assert pipeline.close(time.monotonic()) == 1       # still encoding 12 megapixels: left unfinished
    wait_for(lambda: pipeline.stopped, 60, "the encode thread to end")
    assert outcomes.by_name == {} and not out.exists() and big.exists()



def test_an_animation_gives_its_first_frame_and_says_so(tmp_path, colorizer):
    frames = [Image.new("L", (48, 32), v) for v in (40, 200, 120)]
    path = tmp_path / "anim_before.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    still = make_image(tmp_path / "still_before.png", (48, 32), "L", seed=1)
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 4}, SETTINGS)
    try:
        got = run_all(pipe, [path, still], tmp_path / "out", Outcomes())
    finally:
        pipe.close(time.monotonic() + 5)
    assert got[path.name].ok and "the first of its 3 frames was converted" in got[path.name].note
    assert got[still.name].ok and "frames" not in got[still.name].note
    with Image.open(got[path.name].output) as im:
        assert abs(np.asarray(im.convert("L"), float).mean() - 40) < 3   # the first frame's picture
