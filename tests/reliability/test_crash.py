"""Crash: kill -9 at random moments during a flood, restart each time; nothing lost, nothing done twice."""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest

from tests.support.accounting import account, settled
from tests.support.checker import OutboxChecker
from tests.support.pictures import picture_pool
from tests.support.rig import Rig, poll
from tests.support.writers import Flood
from tests.support.service import names


@pytest.mark.parametrize("n, rounds", [
    pytest.param(300, 4, id="4-rounds"),
    pytest.param(2000, 20, id="20-rounds", marks=pytest.mark.soak),
])
def test_kill_9_at_random_moments_loses_nothing_and_converts_nothing_twice(tmp_path, tiny_models, service_env,
                                                                           record, n, rounds):
    # A restart finds files by its scan, without their writers' open and close events: there, a file
    # is complete once unchanged for settle_seconds (README), so the slow writers pause for less.
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env,
              "[runtime]\nmax_batch = 4\nqueue_size = 16\n[watch]\nsettle_seconds = 1.0\n")
    flood = Flood(rig.inbox(), picture_pool(tmp_path / "pool"), tmp_path / "pool-files", tmp_path / "stage",
                  chunk_pause=0.3)
    # Other moments each run; a failure names its seed (RELIABILITY_SEED=... repeats its choices).
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    t0 = time.monotonic()
    kills = []
    try:
        sizes: dict[str, tuple[int, int]] = {}
        with OutboxChecker(rig.outbox(), sizes) as checker:
            for r in range(rounds):
                # Each round a wave of the flood arrives (paced, so files still land when the kill comes),
                # and the service is killed mostly while converting, sometimes during start-up (when
                # it recovers what the last one left in work/).
                wave = n // rounds + (n % rounds if r == rounds - 1 else 0)
                flood.start(wave, chunked=2, pace=0.02, first=r * (n // rounds))
                sizes.update({name.rsplit("_before", 1)[0]: pic.size for name, pic in flood.delivered.items()})
                # Round 0 has nothing in work/ to recover, so its kill always comes while converting.
                early = r > 0 and rng.random() < 0.25
                child = rig.start(ready=not early)
                if early:
                    time.sleep(rng.uniform(0.5, 4.0))
                else:
                    # Kill at a random point of the wave's progress (not at a random time: a fast machine
                    # can finish a wave before a timer runs out), watched closely so it lands mid-drain.
                    total, before = len(flood.delivered), settled(rig)
                    target = min(total, before + rng.randint(1, max(1, total - before - 1)))
                    poll(lambda: settled(rig) >= target, 120, f"{target} of {total} settled", rig, every=0.002)
                    time.sleep(rng.uniform(0.0, 0.02))  # and at any phase of a file's way through
                assert child.proc.poll() is None, f"the service died on its own:\n{child.log()[-3000:]}"
                rig.kill9()
                kills.append((settled(rig), len(names(rig.work()))))  # counted once dead: what it left
            flood.wait(300)
            rig.start()
            poll(lambda: settled(rig) >= n, 120 + n * 0.2, f"all {n} inputs done after the last restart", rig)
            assert rig.stop() == 0
        tally = account(rig, list(flood.delivered))
    finally:
        rig.close()
    record("crash: kill -9 at random moments during a flood, then restart", f"{rounds} rounds, {n} files",
           len(tally.lost), len(tally.twice), rig.peak_kb, time.monotonic() - t0)
    assert not checker.problems, (seed, checker.problems[:10])
    assert tally.lost == [] and tally.stray == [], (seed, tally, kills)
    assert tally.twice == [], (seed, tally.twice, kills, traces(rig, tally.twice))
    assert tally.quarantined == 0 and tally.converted == n, (seed, names(rig.failed()))
    assert tally.leftover == [], f"nothing left in the inbox or work/ (seed {seed})"
    assert tally.temp == [], f"no temporary files or stale locks left behind (seed {seed})"
    # The kills did land in the middle of work: some rounds left claimed files in work/.
    assert any(in_work for _, in_work in kills), kills


def traces(rig: Rig, inputs: list[str]) -> list[str]:
    """Where each input's copies and results are, and every log line naming it: what a failure needs."""
    found = []
    for name in inputs:
        stem = name.rsplit("_before", 1)[0]
        for folder in (rig.outbox(), rig.failed(), rig.done()):
            found += [f"{folder.name}/{n}" for n in names(folder) if n.startswith(stem + "_")]
        for i, child in enumerate(rig.runs):
            found += [f"run{i + 1}: {line}" for line in child.log().splitlines() if stem + "_" in line]
    return found


def test_a_kill_between_writing_a_result_and_moving_its_input_does_not_convert_it_again(tmp_path, tiny_models,
                                                                                       service_env, record):
    """The narrowest window: the result is in place, the input still in work/. Holding done/ shut
    makes the window last as long as the test likes (moving the input out fails), then kill -9."""
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env, "[runtime]\nmax_batch = 4\n")
    pool = picture_pool(tmp_path / "pool", 4)
    t0 = time.monotonic()
    try:
        rig.start()
        done = rig.done()
        shutil.rmtree(done, ignore_errors=True)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("a file where the done folder should be: moving an input there fails\n")
        delivered = []
        for i, pic in enumerate(pool):
            name = f"window{i}_before{pic.ext}"
            (rig.inbox() / name).write_bytes(pic.data)
            delivered.append(name)
        poll(lambda: len([n for n in names(rig.outbox()) if not n.startswith(".")]) >= len(pool), 60,
             "the results", rig)
        # The first failed move is logged (the others are counted) and each is tried again after a pause.
        poll(lambda: "cannot be moved into" in rig.log(), 30, "the failed move logged", rig)
        assert len(names(rig.work())) == len(pool), "the inputs are still in work/, their results written"
        rig.kill9()
        done.unlink()
        rig.start()
        poll(lambda: len(names(rig.done())) >= len(pool), 60, "the inputs moved to done/", rig)
        time.sleep(1.0)  # time enough to (wrongly) convert them again
        assert rig.stop() == 0
        tally = account(rig, delivered)
    finally:
        rig.close()
    record("crash: kill -9 between a result's rename and its input leaving work/", f"{len(pool)} files",
           len(tally.lost), len(tally.twice), rig.peak_kb, time.monotonic() - t0)
    assert tally.twice == [], f"converted again after the restart: {names(rig.outbox())}"
    assert tally.lost == [] and tally.leftover == [] and tally.temp == []
    assert sorted(names(rig.outbox())) == sorted(n.replace("_before", "_after") for n in delivered)
