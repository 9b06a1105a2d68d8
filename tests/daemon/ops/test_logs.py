"""A log stream that is gone (closed by its owner, or a pipe whose reader hung up) drops its lines quietly:
no traceback per line on stderr, and the process carries on, in every format the service logs in."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from tests.support.processes import PYTHON

# The child sets logging up on a stream, loses that stream, logs on, and says on stderr that it carried on.
CHILD = textwrap.dedent("""
    import os, sys
    from loguru import logger
    from daemon.core.config import LoggingConfig
    from daemon.ops.logs import setup_logging

    how, form, path = sys.argv[1:4]
    stream = sys.stdout if how == "pipe" else open(path, "w")
    setup_logging(LoggingConfig(level="INFO", json=form == "json"), stream=stream, bars=form == "bars")
    logger.info("first line, while the stream is there")
    if how == "closed":
        stream.close()
    else:
        sys.stdin.readline()  # the reader has hung up: the next writes meet a broken pipe
    for i in range(20):
        logger.warning("line {} into a stream that is gone", i)
    logger.info("one more")
    sys.stderr.write("carried on\\n")
    sys.stderr.flush()
    # Not the interpreter's exit: it would flush the broken stdout once more and say so itself.
    os._exit(0)
""")

FORMS = ["text", "json", "bars", "journal"]


def _env(env: dict, form: str, path) -> dict:
    """As systemd sets it up for the journal form: JOURNAL_STREAM names the stream's file."""
    env = {k: v for k, v in env.items() if k != "JOURNAL_STREAM"}
    if form == "journal":
        st = os.stat(path)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    return env


@pytest.mark.parametrize("form", FORMS)
def test_a_closed_stream_drops_lines_without_a_traceback(tmp_path, service_env, form):
    path = tmp_path / "log.txt"
    path.touch()
    r = subprocess.run([PYTHON, "-c", CHILD, "closed", form, str(path)], env=_env(service_env, form, path),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "carried on\n", r.stderr[-3000:]
    assert "first line" in path.read_text(), "the line logged before the stream closed is written"
    assert "into a stream that is gone" not in path.read_text()


@pytest.mark.parametrize("form", ["text", "json", "bars"])
def test_a_pipe_whose_reader_hung_up_drops_lines_without_a_traceback(tmp_path, service_env, form):
    # `reverser run | head -1`: the reader takes a line and goes; the writer meets EPIPE from then on.
    child = subprocess.Popen([PYTHON, "-c", CHILD, "pipe", form, "-"], env=_env(service_env, form, None),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "first line" in child.stdout.readline()
        child.stdout.close()
        child.stdin.write("go on\n")
        child.stdin.close()
        stderr = child.stderr.read()
        assert child.wait(120) == 0 and stderr == "carried on\n", stderr[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
