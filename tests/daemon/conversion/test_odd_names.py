"""File names as Linux has them (bytes, not always UTF-8, control characters allowed), through a real service.

A name that is not UTF-8 is converted, quarantined with its reason, filed for training and trained on;
the log file keeps every line, printed safely; `reverser train` runs afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.pairs import tiny_champion, write_pairs
from tests.support.processes import PYTHON
from tests.support.service import Service, services, wait_for

QUICK = "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n[status]\ninterval_seconds = 0.5\n"


def fs(raw: bytes) -> str:
    """A file name from its bytes, as Python carries it (undecodable bytes as surrogate escapes)."""
    return os.fsdecode(raw)


def listed(folder: Path) -> set[bytes]:
    return {os.fsencode(e.name) for e in os.scandir(folder)} if folder.is_dir() else set()


@pytest.fixture
def champion(tmp_path):
    return tiny_champion(tmp_path / "shipped" / "colorize")


def _start(tmp_path, champion, env, logging: str) -> tuple[Service, object]:
    cfg = write_config(tmp_path, {"colorize": champion}, QUICK + logging)
    return Service(cfg, env, tmp_path / "stdout.log"), load_config(cfg)


def test_a_name_that_is_not_utf8_is_converted_failed_filed_and_trained_on(tmp_path, champion, service_env):
    logfile = tmp_path / "logs" / "reverser.log"
    with services() as running:
        s, cfg = _start(tmp_path, champion, service_env, f'[logging]\nfile = "{logfile}"\n')
        running.append(s)
        s.wait_ready()
        inbox, train = cfg.inbox("colorize"), cfg.train_inbox("colorize")
        # Conversion: a good image, a broken one, and a name with an escape sequence in it.
        make_image(inbox / fs(b"photo\xe9_before.png"), mode="L")
        (inbox / fs(b"broken\xe9_before.png")).write_bytes(b"\x89PNG\r\n\x1a\n not really")
        make_image(inbox / "red\x1b[31m_before.png", mode="L", seed=2)
        # Training: a color photo whose name is not UTF-8, then the same bytes under another such name.
        make_image(tmp_path / "color.png", seed=5)
        os.link(tmp_path / "color.png", train / fs(b"color\xe9.png"))
        out, failed, pairs = cfg.outbox("colorize"), cfg.failed("colorize"), cfg.state_dir("pairs", "colorize")
        wait_for(lambda: {b"photo\xe9_after.png", b"red\x1b[31m_after.png"} <= listed(out), 30,
                 "both results", log=s.log)
        wait_for(lambda: b"broken\xe9_before.png.reason.txt" in listed(failed), 30, "the reason file", log=s.log)
        wait_for(lambda: b"color\xe9_after.png" in listed(pairs), 30, "the photo filed", log=s.log)
        os.link(tmp_path / "color.png", train / fs(b"again\xe0.png"))
        wait_for(lambda: b"again\xe0.png.reason.txt" in listed(failed), 30, "the duplicate refused", log=s.log)
        wait_for(lambda: json.loads((cfg.paths.state / "status.json").read_text())["queues"]["colorize"]
                 ["failed"] == 1, 10, "the failure counted", log=s.log)
        assert "broken" in (failed / fs(b"broken\xe9_before.png.reason.txt")).read_text()
        assert "duplicate" in (failed / fs(b"again\xe0.png.reason.txt")).read_text()
        assert s.stop() == 0

    index = [json.loads(line) for line in (pairs / "index.jsonl").read_text().splitlines()]
    assert [e["files"] for e in index] == [[fs(b"color\xe9_after.png")]]
    assert json.loads((pairs / "counts.json").read_text())["pairs"] == 1

    # The log file has every line the service wrote to stderr, and no raw control character.
    text = logfile.read_text(encoding="utf-8")
    stderr = (tmp_path / "stdout.log").read_text(encoding="utf-8", errors="replace")
    assert "Logging error" not in stderr and "Traceback" not in stderr
    assert "\x1b" not in text and "\\x1b[31m" in text
    assert "photo\\xe9_before.png" in text and "color\\xe9" in text
    assert len(text.splitlines()) == len([line for line in stderr.splitlines() if line[:2] == "20"])

    # Training runs with that pair among the others.
    write_pairs(pairs, 24)
    run = subprocess.run([PYTHON, "-m", "daemon", "train", "--config", str(cfg.file), "--queue", "colorize",
                          "--epochs", "1", "--no-promote"], env=service_env, capture_output=True, text=True,
                         errors="replace", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr


def test_json_lines_in_a_log_file_keep_messages_with_angle_brackets(tmp_path, champion, service_env):
    logfile = tmp_path / "reverser.jsonl"
    with services() as running:
        s, cfg = _start(tmp_path, champion, service_env, f'[logging]\njson = true\nfile = "{logfile}"\n')
        running.append(s)
        s.wait_ready()
        make_image(cfg.inbox("colorize") / fs(b"odd\xff<queue>_before.png"), mode="L")
        wait_for(lambda: b"odd\xff<queue>_after.png" in listed(cfg.outbox("colorize")), 30, "the result",
                 log=s.log)
        assert s.stop() == 0
    lines = [json.loads(line) for line in logfile.read_text(encoding="utf-8").splitlines()]
    messages = [e["message"] for e in lines]
    assert any(m.startswith("Ready: drop NAME_before.jpg into") and "<queue>" in m for m in messages)
    assert any("odd\\xff<queue>_before.png" in m for m in messages)
    assert "Logging error" not in s.log()


def _names(folder: Path) -> list[str]:
    return os.listdir(folder) if folder.is_dir() else []


def _long(stem_bytes: int, tail: str) -> str:
    """A name of exactly stem_bytes + len(tail) bytes: 'a's, then tail."""
    return "a" * stem_bytes + tail


def test_names_at_the_limit_dropped_twice_are_both_converted_and_leave_work_empty(tmp_path, champion, service_env):
    n255 = _long(255 - len("_before.png"), "_before.png")
    n254 = "b" * (254 - len("_before.png")) + "_before.png"
    assert len(n255) == 255 and len(n254) == 254
    with services() as running:
        s, cfg = _start(tmp_path, champion, service_env, "")
        running.append(s)
        s.wait_ready()
        inbox, out, done = cfg.inbox("colorize"), cfg.outbox("colorize"), cfg.state_dir("done", "colorize")
        for seed in (1, 2):  # the same names again, once the first ones are through
            for name in (n255, n254):
                make_image(tmp_path / "src.png", mode="L", seed=seed)
                os.rename(tmp_path / "src.png", inbox / name)
            wait_for(lambda: len([n for n in _names(out) if n.endswith(".png")]) == 2 * seed
                     and len(_names(done)) == 2 * seed, 30, f"round {seed} through", log=s.log)
        results = sorted(n for n in os.listdir(out) if not n.startswith("."))
        assert len(results) == 4 and all(len(os.fsencode(n)) <= 255 for n in results)
        # NAME_after.png and NAME_after-1.png, NAME cut short, never the _after marker
        assert sorted(n.rsplit("_", 1)[1] for n in results) == ["after-1.png"] * 2 + ["after.png"] * 2
        assert all(len(os.fsencode(n)) <= 255 for n in os.listdir(done))
        assert [n for n in os.listdir(out) if n.startswith(".")] == []   # no receipt left behind
        assert s.stop() == 0
    work = cfg.state_dir("work", "colorize")
    assert [n for n in os.listdir(work)] == []
    assert "Traceback" not in s.log() and "too long" not in s.log()


def test_a_training_photo_with_a_long_name_is_filed_under_a_name_that_fits(tmp_path, champion, service_env):
    with services() as running:
        s, cfg = _start(tmp_path, champion, service_env, "")
        running.append(s)
        s.wait_ready()
        train, pairs = cfg.train_inbox("colorize"), cfg.state_dir("pairs", "colorize")
        for i, length in enumerate((249, 255)):
            make_image(tmp_path / "src.png", seed=10 + i)
            os.rename(tmp_path / "src.png", train / (f"{i}" * (length - 4) + ".png"))
        wait_for(lambda: len([n for n in _names(pairs) if n.endswith(".png")]) == 2, 30, "both filed",
                 log=s.log)
        assert s.stop() == 0
    filed = sorted(n for n in os.listdir(pairs) if n.endswith(".png"))
    assert all(n.endswith("_after.png") and len(n) <= 255 for n in filed)
    assert os.listdir(train) == [] and "Traceback" not in s.log()
