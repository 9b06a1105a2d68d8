"""Pictures with color points beside them through kill -9 at random moments: each picture ends as one
result colored with its points, and its hints file in done/ beside it; nothing lost, nothing done twice.

A kill can land between claiming a picture and claiming its hints, and between moving the picture to
done/ and moving its hints after it: the restart puts the pair back together (conversion/claims/spool.py)."""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
from PIL import Image

from tests.support.accounting import account
from tests.support.rig import Rig, poll
from tests.support.service import names

BLUE = (40, 70, 240)


def done_pictures(rig: Rig) -> int:
    return sum(1 for n in names(rig.done()) if "_before" in n)


def drop_pairs(inbox, n: int, first: int) -> list[str]:
    """n gray pictures, each with one blue point at its middle; the hints go first, as a user would."""
    made = []
    inbox.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(first)
    for i in range(first, first + n):
        gray = (rng.random((48, 64)) * 60 + np.linspace(80, 170, 64)[None, :]).astype(np.uint8)
        (inbox / f"p{i}_hints.json").write_text(json.dumps(
            {"points": [{"x": 0.5, "y": 0.5, "color": "#%02x%02x%02x" % BLUE}]}))
        Image.fromarray(gray, "L").save(inbox / f".p{i}.png")
        os.rename(inbox / f".p{i}.png", inbox / f"p{i}_before.png")
        made.append(f"p{i}_before.png")
    return made


def test_pairs_of_picture_and_points_survive_kill_9_and_each_result_obeys_its_points(tmp_path, tiny_models,
                                                                                     service_env, record):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env,
              "[runtime]\nmax_batch = 2\nqueue_size = 8\n[watch]\nsettle_seconds = 0.5\n")
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 2**32))
    rng, t0, delivered = random.Random(seed), time.monotonic(), []
    try:
        for r in range(3):
            delivered += drop_pairs(rig.inbox(), 8, r * 8)
            rig.start()
            target = done_pictures(rig) + rng.randint(1, 7)
            poll(lambda: done_pictures(rig) >= target, 180, f"{target} pictures done", rig, every=0.002)
            time.sleep(rng.uniform(0.0, 0.02))
            rig.kill9()
        rig.start()
        poll(lambda: done_pictures(rig) >= len(delivered), 300, "every picture done after the last restart", rig)
        assert rig.stop() == 0
        tally = account(rig, delivered)
    finally:
        rig.close()
    record("kill -9 with color points beside the pictures", f"3 rounds, {len(delivered)} pairs",
           len(tally.lost), len(tally.twice), rig.peak_kb, time.monotonic() - t0)
    assert tally.lost == [] and tally.twice == [] and tally.stray == [], (seed, tally)
    assert tally.quarantined == 0 and tally.leftover == [] and tally.temp == [], (seed, tally)
    done = set(names(rig.done()))
    assert {f"p{i}_hints.json" for i in range(len(delivered))} <= done, (seed, sorted(done))
    assert not any("-1." in n for n in done), (seed, sorted(done))   # no hints file moved twice
    for name in names(rig.outbox()):
        if name.startswith(".") or name == "failed":
            continue
        rgb = np.asarray(Image.open(rig.outbox() / name).convert("RGB"), dtype=int)
        h, w, _ = rgb.shape
        r, g, b = rgb[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2].reshape(-1, 3).mean(0)
        assert b > r + 40 and b > g + 20, (seed, name, (r, g, b))   # blue where its point said
