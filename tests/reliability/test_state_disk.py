"""The state folder's disk full or read-only, and a pairs folder that takes nothing: a real service, a real
tmpfs filled up or remounted read-only (skipped where it cannot be mounted), files moved on when the disk
is back, with no reload; each failure said once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.filesystems import fill, read_only, small_tmpfs
from tests.support.images import make_image
from tests.support.pairs import tiny_champion
from tests.support.service import Service, services, wait_for


@pytest.fixture
def champion(tmp_path):
    return tiny_champion(tmp_path / "shipped" / "colorize")


def _names(folder: Path) -> list[str]:
    """The names in folder but hidden ones (the owners' locks beside claims)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.is_dir() else []


def _noise(path: Path, seed: int) -> Path:
    """A gray PNG of noise (about 90 kB: it does not compress), written elsewhere and renamed in."""
    a = np.random.default_rng(seed).integers(0, 256, (300, 300), dtype=np.uint8)
    tmp = path.parent.parent / f".{path.name}"
    Image.fromarray(a, "L").save(tmp, format="PNG")
    os.rename(tmp, path)
    return path


def test_a_training_file_that_cannot_be_filed_waits_longer_each_time_and_is_logged_once(
        tmp_path, champion, service_env):
    # rescan 12 s: an offer more often than that comes from the intake's own reads of the file.
    cfg_path = write_config(tmp_path, {"colorize": champion},
                            "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 12\n")
    cfg = load_config(cfg_path)
    pairs = cfg.state_dir("pairs", "colorize")
    pairs.parent.mkdir(parents=True)
    pairs.write_text("not a folder")   # the pairs folder cannot be made: filing fails, not the photo's fault
    with services() as running:
        s = Service(cfg_path, service_env, tmp_path / "service.log")
        running.append(s)
        s.wait_ready()
        make_image(tmp_path / "src.png", seed=3)
        os.rename(tmp_path / "src.png", cfg.train_inbox("colorize") / "beach.png")
        s.wait_log("cannot be filed now")
        time.sleep(8)
        assert s.log().count("beach.png") == 1, s.log()   # one line, not one a second
        assert "Traceback" not in s.log()
        pairs.unlink()                                     # the folder can be made again
        s.wait_log("beach.png filed after 1 failed try", timeout=40)
        assert "beach_after.png" in _names(pairs)
        assert s.stop() == 0


def test_a_full_then_read_only_state_disk_holds_inputs_in_work_and_moves_them_on_when_it_is_back(
        tmp_path, champion, service_env):
    state = tmp_path / "state"
    with small_tmpfs(state, "16m"), services() as running:
        cfg_path = write_config(tmp_path, {"colorize": champion},
                                f'[paths]\nstate = "{state}"\n[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n'
                                "[status]\ninterval_seconds = 0.5\n")
        cfg = load_config(cfg_path)
        s = Service(cfg_path, service_env, tmp_path / "service.log")
        running.append(s)
        s.wait_ready()
        inbox, out = cfg.inbox("colorize"), cfg.outbox("colorize")
        done, work = cfg.state_dir("done", "colorize"), inbox / ".reverser-work"   # the inbox is elsewhere
        train, pairs = cfg.train_inbox("colorize"), cfg.state_dir("pairs", "colorize")

        filler = fill(state)
        for i in range(4):
            _noise(inbox / f"n{i}_before.png", i)
        make_image(tmp_path / "src.png", seed=3)
        os.rename(tmp_path / "src.png", train / "beach.png")
        wait_for(lambda: len([n for n in _names(out) if n.endswith(".png")]) == 4, 60, "4 results", log=s.log)
        time.sleep(4)
        assert len(_names(work)) == 4 and not [n for n in _names(done) if n.endswith(".png")]
        assert [n for n in (os.listdir(done) if done.is_dir() else []) if n.startswith(".reverser-")] == []
        log = s.log()
        assert log.count("status.json: No space left on device") == 1, log
        assert log.count("cannot be moved into") == 1 and log.count("cannot be filed now") == 1, log
        assert "Traceback" not in log

        filler.unlink()                                    # space is back: no reload, no restart
        wait_for(lambda: len(_names(done)) == 4 and _names(work) == [], 40, "inputs moved on", log=s.log)
        wait_for(lambda: "beach_after.png" in _names(pairs), 40, "the photo filed", log=s.log)
        s.wait_log("status.json is written again")
        s.wait_log("have moved on")

        with read_only(state):
            for i in range(4, 6):
                _noise(inbox / f"n{i}_before.png", i)
            wait_for(lambda: len([n for n in _names(out) if n.endswith(".png")]) == 6, 60, "6 results", log=s.log)
            time.sleep(3)
            assert len(_names(work)) == 2
            assert s.log().count("status.json: Read-only file system") == 1, s.log()
        wait_for(lambda: len(_names(done)) == 6 and _names(work) == [], 40, "inputs moved on again", log=s.log)
        assert s.stop() == 0
