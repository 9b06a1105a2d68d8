"""Flood: many files at once from mixed writers; every one ends exactly once, no reader sees half a result."""

from __future__ import annotations

import time

import pytest

from tests.support.accounting import account, settled
from tests.support.checker import OutboxChecker
from tests.support.pictures import picture_pool
from tests.support.rig import Rig, poll
from tests.support.writers import Flood


@pytest.mark.parametrize("n, chunked", [
    pytest.param(500, 12, id="500"),
    pytest.param(2000, 24, id="2000", marks=pytest.mark.soak),
    pytest.param(10_000, 24, id="10000", marks=pytest.mark.soak),
])
def test_a_flood_from_mixed_writers_ends_exactly_once_and_whole(tmp_path, tiny_models, service_env, record,
                                                                  n, chunked):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env,
              "[runtime]\nmax_batch = 4\nqueue_size = 32\n")
    flood = Flood(rig.inbox(), picture_pool(tmp_path / "pool"), tmp_path / "pool-files", tmp_path / "stage")
    t0 = time.monotonic()
    try:
        rig.start()
        sizes: dict[str, tuple[int, int]] = {}
        with OutboxChecker(rig.outbox(), sizes) as checker:
            flood.start(n, chunked=chunked)
            sizes.update({name.rsplit("_before", 1)[0]: pic.size for name, pic in flood.delivered.items()})
            flood.wait(600)
            poll(lambda: settled(rig) >= n, 60 + n * 0.5, f"{n} inputs done", rig)
            assert rig.alive()
            assert rig.stop() == 0
        tally = account(rig, list(flood.delivered))
    finally:
        rig.close()
    record(f"flood, mixed writers ({', '.join(f'{k} {v}' for k, v in flood.by_kind.items())})", f"{n} files",
           len(tally.lost), len(tally.twice), rig.peak_kb, time.monotonic() - t0)
    assert not checker.problems, checker.problems[:10]
    assert len(checker.seen) == n, "the checker opened every result"
    assert tally.lost == [] and tally.twice == [] and tally.stray == []
    assert tally.quarantined == 0, "nothing in a good flood fails (a slow writer's file was never taken partial)"
    assert tally.converted == n and tally.leftover == [] and tally.temp == []
