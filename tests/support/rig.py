"""The reliability suite's rig: a real `reverser run` child on temporary folders, its successive runs
(starts, kill -9s, restarts), peak-memory sampling, and waits that show the service's log.

Nothing is mocked: the child is `python -m daemon run`, the observer is the real one, files are
written by real threads and processes (tests/support/writers.py), and kills are real signals. The
outbox checker (checker.py) and the accounting (accounting.py) say what was lost, torn or
processed twice; pictures.py makes the inputs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from daemon.core.config import load_config
from tests.support.config import merge_sections, write_config
from tests.support.processes import PYTHON
from tests.support.service import Service, wait_for


# Quick settle and scan times, one model thread, short retry pauses: a small, busy machine.
QUICK = ('[runtime]\ntorch_threads = 1\n'
         '[watch]\nsettle_seconds = 0.25\nrescan_seconds = 2\n'
         '[limits]\nretry_backoff_seconds = 0.05\n'
         '[status]\ninterval_seconds = 0.5\n')

NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def without_file_permission_override() -> tuple[str, ...] | None:
    """A command prefix under which the service cannot ignore file permissions, or None if there is none.

    Tests here may run as root, and root reads any file and writes any folder: permission
    faults would be fakes. The service then runs as root without the two capabilities that
    let root bypass permission checks (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so the kernel
    enforces a file's mode bits on it as on any user. Not root: no prefix needed.
    """
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*NO_DAC, "cat", "/proc/self/status"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    return NO_DAC


class Child(Service):
    """A service child, optionally started under a command prefix (such as setpriv)."""

    def __init__(self, config: Path, env: dict, log: Path, prefix: tuple[str, ...] = ()):
        self.config, self.logfile = config, log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen([*prefix, PYTHON, "-m", "daemon", "run", "--config", str(config)],
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=config.parent)


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set so far (VmHWM, kB), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Rig:
    """One service's folders and config, and its successive runs (starts, kills, restarts)."""

    def __init__(self, root: Path, models: dict[str, Path], env: dict, text: str = "",
                 prefix: tuple[str, ...] = ()):
        self.root, self.env, self.prefix = root, env, prefix
        self.cfg_path = write_config(root, models, merge_sections(QUICK, text))
        self.cfg = load_config(self.cfg_path)
        self.runs: list[Child] = []
        self.peak_kb = 0
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def current(self) -> Child:
        return self.runs[-1]

    def start(self, ready: bool = True) -> Child:
        child = Child(self.cfg_path, self.env, self.root / f"run{len(self.runs) + 1}.log", self.prefix)
        self.runs.append(child)
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        if ready:
            child.wait_ready(180)
        return child

    def _sample(self) -> None:
        while not self._sampling.wait(0.1):
            for child in self.runs[-1:]:
                self.peak_kb = max(self.peak_kb, peak_rss_kb(child.proc.pid))

    def kill9(self) -> None:
        child = self.current
        self.peak_kb = max(self.peak_kb, peak_rss_kb(child.proc.pid))
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(30)
        child._out.close()

    def stop(self) -> int | None:
        child = self.current
        self.peak_kb = max(self.peak_kb, peak_rss_kb(child.proc.pid))
        return child.stop()

    def close(self) -> None:
        """Stop whatever still runs (pass or fail) and the sampler."""
        for child in self.runs:
            if child.proc.poll() is None:
                child.stop()
        self._sampling.set()

    def log(self) -> str:
        return "".join(c.log() for c in self.runs)

    def alive(self) -> bool:
        return self.current.proc.poll() is None

    # Folders of one queue.
    def inbox(self, q="colorize") -> Path:
        return self.cfg.inbox(q)

    def outbox(self, q="colorize") -> Path:
        return self.cfg.outbox(q)

    def failed(self, q="colorize") -> Path:
        return self.cfg.failed(q)

    def work(self, q="colorize") -> Path:
        return self.cfg.state_dir("work", q)

    def done(self, q="colorize") -> Path:
        return self.cfg.state_dir("done", q)


def poll(cond, timeout: float, what: str, rig: Rig | None = None, every: float = 0.1):
    """wait_for with the rig's service log in the failure message."""
    return wait_for(cond, timeout, what, every=every, log=rig.log if rig else None)
