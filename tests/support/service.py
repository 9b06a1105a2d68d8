"""Helpers for the service's tests: a real `python -m daemon run` child, polling waits, log capture."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from loguru import logger

from tests.support.processes import PYTHON


def wait_for(cond, timeout: float = 60.0, what: str = "condition", every: float = 0.05, log=None):
    """Poll cond() until it returns something true; fail with what (and a log tail) after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = f"\n--- service log (tail) ---\n{log()[-4000:]}" if log else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(every)


class Service:
    """A service child process; its stdout and stderr go to a log file the test can read."""

    def __init__(self, config: Path, env: dict, log: Path, *args: str):
        self.config, self.logfile = config, log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "daemon", "run", "--config", str(config), *args],
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=config.parent)

    def log(self) -> str:
        return self.logfile.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> "Service":
        wait_for(lambda: "Ready:" in self.log() or self.proc.poll() is not None, timeout, "the service to start",
                 log=self.log)
        assert self.proc.poll() is None, f"the service exited with {self.proc.returncode}:\n{self.log()}"
        return self

    def wait_log(self, needle: str, timeout: float = 60.0, count: int = 1) -> None:
        wait_for(lambda: self.log().count(needle) >= count, timeout, f"{needle!r} in the log", log=self.log)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the service did not exit within {timeout:g} s\n{self.log()[-4000:]}") from None

    def stop(self) -> int | None:
        """SIGTERM and wait; kill it if it hangs (a test failure, but never a stray process)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        return self.proc.returncode


@contextlib.contextmanager
def services():
    """Yield a list to append Service objects to; every one is stopped at the end, pass or fail."""
    running: list[Service] = []
    try:
        yield running
    finally:
        for s in running:
            s.stop()


@contextlib.contextmanager
def captured_logs(level: str = "DEBUG"):
    """Collect loguru messages (text only) in a list while inside."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level=level)
    try:
        yield lines
    finally:
        logger.remove(sink)


def names(folder: Path) -> list[str]:
    """Sorted names of the regular files (and links) in folder; [] if it does not exist."""
    try:
        return sorted(e.name for e in os.scandir(folder) if not e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
