"""Logging under systemd: syslog priority prefixes, no timestamps or colors, one line per failure, no storms."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap

from daemon.ops.journal import Repeats, under_journald
from tests.support.processes import PYTHON

CHILD = textwrap.dedent("""
    import sys
    from loguru import logger
    from daemon.core.config import LoggingConfig
    from daemon.ops.journal import under_journald
    from daemon.ops.logs import setup_logging

    assert under_journald(), "JOURNAL_STREAM should match this stderr"
    setup_logging(LoggingConfig(level=sys.argv[1]))  # the service's own set-up picks the journal format
    logger.debug("looking at {}", "inbox/colorize")
    logger.info("Ready: drop NAME_before.jpg into inbox/<queue>/")
    logger.warning("colorize: a_before.jpg failed: not an image\\nmoved to outbox/colorize/failed")
    for _ in range(50):
        logger.error("cannot write status.json: disk full")
    try:
        open("/nonexistent/folder/x")
    except OSError:
        logger.exception("reload refused")
    logger.critical("giving up")
""")


def run_child(tmp_path, env, level="INFO") -> str:
    """The child logs with stderr going to a file, and JOURNAL_STREAM naming that file, as systemd does."""
    log = tmp_path / "stderr.txt"
    with open(log, "w") as f:
        st = os.fstat(f.fileno())
        env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        r = subprocess.run([PYTHON, "-c", CHILD, level], env=env, stderr=f, timeout=60)
    text = log.read_text()
    assert r.returncode == 0, text
    return text


def test_lines_carry_syslog_priorities_and_no_time_or_color(tmp_path, service_env):
    lines = run_child(tmp_path, service_env).splitlines()
    assert lines[0] == "<6>Ready: drop NAME_before.jpg into inbox/<queue>/"
    assert lines[1] == "<4>colorize: a_before.jpg failed: not an image"
    assert lines[2] == "<4>moved to outbox/colorize/failed"  # every line of a message keeps its priority
    assert lines[3] == "<3>cannot write status.json: disk full"
    assert lines[-1] == "<2>giving up"
    for line in lines:
        assert re.match(r"<[0-7]>", line), line
        assert "\x1b[" not in line, "no ANSI colors in the journal"
        assert not re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d", line), "journald stamps the time itself"
    assert not any("looking at" in line for line in lines), "DEBUG is below the INFO level"


def test_a_failure_is_one_line_with_its_reason_not_a_traceback(tmp_path, service_env):
    text = run_child(tmp_path, service_env)
    failure = [line for line in text.splitlines() if "reload refused" in line]
    assert failure == ["<3>reload refused: FileNotFoundError: [Errno 2] No such file or directory: "
                       "'/nonexistent/folder/x'"]
    assert "Traceback" not in text


def test_a_repeated_error_is_written_once(tmp_path, service_env):
    text = run_child(tmp_path, service_env)
    assert text.count("disk full") == 1


def test_debug_level_adds_the_traceback_at_debug_priority(tmp_path, service_env):
    lines = run_child(tmp_path, service_env, level="DEBUG").splitlines()
    assert "<7>looking at inbox/colorize" in lines
    start = lines.index("<7>Traceback (most recent call last):")
    assert lines[start - 1].startswith("<3>reload refused: FileNotFoundError")
    assert all(line.startswith("<7>") for line in lines[start:-1])


def test_journal_stream_must_match_our_own_stderr(tmp_path, monkeypatch):
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(a)
        assert not under_journald(b), "stderr redirected elsewhere: not the journal"
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not under_journald(a)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not under_journald(a)


class Level:
    def __init__(self, name, no):
        self.name, self.no = name, no


def test_repeats_are_counted_and_reported_after_the_window():
    t = [0.0]
    r = Repeats(window=60, clock=lambda: t[0])
    rec = {"level": Level("ERROR", 40), "message": "disk full", "exception": None}
    assert r(rec) == (True, 0)
    assert [r(rec) for _ in range(5)] == [(False, 0)] * 5
    assert r({**rec, "message": "another problem"}) == (True, 0)
    t[0] = 61
    assert r(rec) == (True, 5)
    info = {"level": Level("INFO", 20), "message": "batch done", "exception": None}
    assert [r(info) for _ in range(3)] == [(True, 0)] * 3, "routine lines are never held back"
