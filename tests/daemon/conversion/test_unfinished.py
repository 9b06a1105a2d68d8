"""A file that may still be being written is not judged on its content: changed since its claim, held open for
writing by a process (seen in /proc), or written a moment ago; a file as its writer left it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from daemon.conversion.converting.pipeline import Job, Pipeline, PipelineSettings
from daemon.core.openfiles import open_for_writing
from tests.daemon.conversion.test_pipeline import SETTINGS, Outcomes, colorizer  # noqa: F401 (fixture)
from tests.support.images import make_image

HOLD = "import sys, time; f = open(sys.argv[1], sys.argv[2]); print('open', flush=True); time.sleep(60)"


@pytest.fixture
def truncated(tmp_path):
    path = make_image(tmp_path / "cut_before.jpg", (200, 150), "L")
    path.write_bytes(path.read_bytes()[:600])
    return path


def outcome_of(pipe, path, tmp_path, claimed=None):
    outcomes = Outcomes()
    st = os.stat(path)
    assert pipe.reserve(timeout=10)
    pipe.submit(Job("colorize", path, tmp_path / "out", "cut_after.jpg", outcomes,
                    claimed=claimed or (st.st_size, st.st_mtime_ns)))
    return outcomes.wait(1)[path.name]


@pytest.mark.parametrize("case, unfinished", [("old", False), ("changed", True), ("young", True)])
def test_a_broken_file_is_judged_only_when_its_writer_is_done(tmp_path, colorizer, truncated,  # noqa: F811
                                                              case, unfinished):
    if case != "young":
        old = time.time() - 3600
        os.utime(truncated, (old, old))
    st = os.stat(truncated)
    claimed = (st.st_size - 100, st.st_mtime_ns) if case == "changed" else None  # it grew after the claim
    pipe = Pipeline({"colorize": colorizer}, {"colorize": 1},
                    PipelineSettings(**{**SETTINGS.__dict__, "young_seconds": 30.0}))
    try:
        got = outcome_of(pipe, truncated, tmp_path, claimed)
    finally:
        pipe.close(time.monotonic() + 5)
    assert not got.ok and got.unfinished is unfinished, got
    assert "truncated" in got.error or "cannot decode" in got.error


def test_a_process_holding_a_file_open_for_writing_is_seen_and_a_reader_is_not(tmp_path):
    written, read = tmp_path / "w_before.jpg", tmp_path / "r_before.jpg"
    read.write_bytes(b"x")
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(p), mode], stdout=subprocess.PIPE, text=True)
             for p, mode in ((written, "ab"), (read, "rb"))]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "open"
        writers, complete = open_for_writing([written, read, tmp_path / "nobody_before.jpg"])
        assert writers == {written: procs[0].pid}
        assert complete or os.geteuid() != 0, "as root every process's files can be seen"
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert open_for_writing([written])[0] == {}
