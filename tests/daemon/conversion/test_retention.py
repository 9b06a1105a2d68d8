"""Retention of processed inputs in done/: the selection rule, the sweep on real folders with real mtimes,
and a real service that sweeps at start-up and keeps failed/ and what it has just converted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.conversion.claims.retention import DAY, DoneSweeper, Kept, select
from daemon.core.config import ConfigError, load_config
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.pairs import tiny_champion
from tests.support.rig import Rig, poll
from tests.support.service import captured_logs, wait_for

NOW = 1_800_000_000.0


def kept(name: str, days_ago: float, size: int = 1000) -> Kept:
    return Kept(Path(name), NOW - days_ago * DAY, size)


def test_the_rule_removes_by_age_then_the_oldest_beyond_the_size_cap():
    files = [kept("a", 40), kept("b", 31), kept("c", 20), kept("d", 10), kept("e", 1)]
    assert select(files, NOW, 0, 0) == []                                    # off: nothing goes
    assert [f.path.name for f in select(files, NOW, 30, 0)] == ["a", "b"]     # older than 30 days
    assert [f.path.name for f in select(files, NOW, 0, 2500)] == ["a", "b", "c"]   # oldest first, to fit
    assert [f.path.name for f in select(files, NOW, 30, 2500)] == ["a", "b", "c"]
    assert [f.path.name for f in select(files, NOW, 30, 10_000)] == ["a", "b"]
    assert select([kept("big", 0, 5000)], NOW, 0, 4000)[0].path.name == "big"   # even the newest, if it alone is over


def aged(path: Path, days_ago: float, size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - days_ago * DAY
    os.utime(path, (t, t))
    return path


def test_periodic_sweeps_remove_only_files_directly_in_done(tmp_path):
    done = tmp_path / "var" / "done"
    old = aged(done / "colorize" / "old_before.jpg", 40)
    young = aged(done / "colorize" / "young_before.jpg", 2)
    hidden = aged(done / "colorize" / ".reverser-tmp", 40)              # being written: never
    nested = aged(done / "colorize" / "sub" / "x_before.jpg", 40)        # not a kept input: never
    failed = aged(tmp_path / "outbox" / "colorize" / "failed" / "bad_before.jpg", 40)
    os.symlink(failed.parent, done / "linked")                           # a link to elsewhere: never followed
    sweeper = DoneSweeper(done, keep_days=30, max_mb=0, every=0.1)
    with captured_logs("INFO") as lines:
        sweeper.start()
        try:
            wait_for(lambda: not old.exists(), 10, "the first sweep")
            later = aged(done / "reverse" / "later_before.jpg", 31)      # the next sweeps take it too
            wait_for(lambda: not later.exists(), 10, "a later sweep")
        finally:
            sweeper.stop()
    assert young.exists() and hidden.exists() and nested.exists() and failed.exists()
    assert any(line.startswith("done/: removed 1 processed input(s), 0.0 MB (older than done_keep_days = 30)")
               for line in lines), lines


def test_retention_keys_are_validated(tmp_path, tiny_models):
    for text, key in (("[output]\ndone_keep_days = -1\n", "done_keep_days"), ('[output]\ndone_max_mb = "1GB"\n',
                                                                                "done_max_mb")):
        with pytest.raises(ConfigError) as e:
            load_config(write_config(tmp_path, tiny_models, text))
        assert f"[output] {key}" in str(e.value) and "config.toml" in str(e.value)
    cfg = load_config(write_config(tmp_path, tiny_models))
    assert (cfg.output.done_keep_days, cfg.output.done_max_mb) == (0, 0)     # off by default


def test_a_service_sweeps_done_at_start_up_and_keeps_failed_and_what_it_just_converted(tmp_path, service_env):
    rig = Rig(tmp_path / "svc", {"colorize": tiny_champion(tmp_path / "shipped" / "colorize")}, service_env,
              "[output]\ndone_keep_days = 30\ndone_max_mb = 0.005\n")
    try:
        done, failed = rig.done(), rig.failed()
        ages = {"a": 45, "b": 31, "c": 6, "d": 5, "e": 4, "f": 3}
        for name, days in ages.items():
            aged(done / f"{name}_before.jpg", days, 1000)
        bad = aged(failed / "bad_before.jpg", 60)
        rig.start()
        # a and b for age; then the oldest of c-f until 5 kB is left: all four fit (4 kB)
        poll(lambda: "done/: removed 2 processed input(s)" in rig.log(), 30, "the start-up sweep", rig)
        assert sorted(p.name for p in done.iterdir()) == [f"{n}_before.jpg" for n in "cdef"]
        assert bad.exists()
        # A scan from long ago, converted now, is new in done/: it counts from the day it was processed.
        photo = make_image(tmp_path / "stage" / "scan_before.jpg")
        t = time.time() - 3000 * DAY
        os.utime(photo, (t, t))
        photo.rename(rig.inbox() / "scan_before.jpg")
        poll(lambda: (done / "scan_before.jpg").exists(), 30, "the input in done/", rig)
        assert time.time() - (done / "scan_before.jpg").stat().st_mtime < DAY
        rig.stop()
        rig.start()       # the next start sweeps again: the size cap now takes the oldest, c, d ...
        poll(lambda: rig.log().count("done/: removed") == 2, 30, "the second start-up sweep", rig)
        left = sorted(p.name for p in done.iterdir())
        assert "scan_before.jpg" in left and "c_before.jpg" not in left and bad.exists()
        assert sum(p.stat().st_size for p in done.iterdir()) <= 5000
    finally:
        rig.close()
