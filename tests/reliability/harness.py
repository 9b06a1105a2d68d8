"""The reliability suite's rig: a real `reverser run` child on temporary folders, mixed writers that
deliver files the ways people and tools do, a checker that opens every file the moment it appears in
the outbox, peak-memory sampling, and the accounting that says what was lost or processed twice.

Nothing is mocked: the child is `python -m daemon run`, the observer is the real one, files are
written by real threads and processes, and kills are real signals.
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image

from daemon.core.config import load_config
from tests.support.config import merge_sections, write_config
from tests.support.images import make_image
from tests.support.processes import PYTHON
from tests.support.service import Service, names, wait_for

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


# -- pictures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Picture:
    ext: str
    data: bytes
    size: tuple[int, int]


def picture_pool(folder: Path, n: int = 24, seed: int = 0) -> list[Picture]:
    """n small, distinct befores (16-128 px, gray and color, PNG and JPEG) as bytes."""
    rng = random.Random(seed)
    pool = []
    for i in range(n):
        size = (rng.randint(16, 128), rng.randint(16, 128))
        ext = ".png" if i % 2 else ".jpg"
        path = make_image(folder / f"pool{i}{ext}", size, "L" if i % 3 else "RGB", seed=i)
        pool.append(Picture(ext, path.read_bytes(), size))
    return pool


# -- writers ------------------------------------------------------------------------------------

# The ways files arrive. Each takes (inbox, name, data, stage folder on the same filesystem).
def write_copy(inbox: Path, name: str, data: bytes, stage: Path) -> None:
    """A plain copy: the file is created in the inbox and written in one go."""
    with open(inbox / name, "wb") as f:
        f.write(data)


def write_rename_in(inbox: Path, name: str, data: bytes, stage: Path) -> None:
    """Written elsewhere on the same filesystem, then renamed in: the safe way to deliver."""
    tmp = stage / name
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def write_rsync(inbox: Path, name: str, data: bytes, stage: Path) -> None:
    """As rsync does: a hidden temporary name in the inbox itself (.NAME.XXXXXX), then a rename."""
    tmp = inbox / f".{name}.{''.join(random.choices('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', k=6))}"
    with open(tmp, "wb") as f:
        for i in range(0, len(data), 4096):
            f.write(data[i:i + 4096])
    os.rename(tmp, inbox / name)


def write_chunked(inbox: Path, name: str, data: bytes, stage: Path, pause: float = 0.5, chunks: int = 4) -> None:
    """A slow writer: the file grows in chunks over seconds, pausing between them."""
    step = len(data) // chunks + 1
    with open(inbox / name, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


# A writer in another process: plain copies and rsync-style renames for its share of files.
_PROCESS_WRITER = r"""
import os, random, sys
inbox, pool_dir = sys.argv[1], sys.argv[2]
for line in sys.stdin.read().splitlines():
    kind, name, src = line.split("\t")
    data = open(os.path.join(pool_dir, src), "rb").read()
    if kind == "copy":
        with open(os.path.join(inbox, name), "wb") as f:
            f.write(data)
    else:
        tmp = os.path.join(inbox, "." + name + "." + "".join(random.choices("abcdefghijklmnop", k=6)))
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(inbox, name))
"""


@dataclass
class Flood:
    """A delivery of many befores by mixed writers at once; remembers what it delivered."""

    inbox: Path
    pool: list[Picture]
    pool_dir: Path
    stage: Path
    prefix: str = "f"
    chunk_pause: float = 0.5     # a slow writer's pause between chunks
    delivered: dict[str, Picture] = field(default_factory=dict)   # name -> picture
    errors: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)

    def plan(self, n: int, chunked: int, first: int = 0, seed: int = 1) -> dict[str, list[tuple[str, Picture]]]:
        """Names for n files (numbered from first), shared among the writers: chunked of them slow."""
        rng = random.Random(seed + first)
        kinds = ["copy", "rename", "rsync", "proc-copy", "proc-rsync"]
        plan: dict[str, list] = {k: [] for k in kinds + ["chunked"]}
        for i in range(first, first + n):
            pic = self.pool[i % len(self.pool)]
            name = f"{self.prefix}{i:05d}_before{pic.ext}"
            kind = "chunked" if i < first + chunked else rng.choice(kinds)
            plan[kind].append((name, pic))
        return plan

    def start(self, n: int, chunked: int = 12, writers: int = 2, pace: float = 0.0, first: int = 0,
              seed: int = 1) -> "Flood":
        """Start every writer at once: `writers` threads per in-process kind, two writer processes,
        the chunked files on threads of their own; pace sleeps between files (to stretch a flood).
        Called again (with first past the files so far), it adds a wave to the flood."""
        self.stage.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        for i, pic in enumerate(self.pool):
            if not (self.pool_dir / f"p{i}{pic.ext}").exists():  # once: earlier waves' writers read them
                (self.pool_dir / f"p{i}{pic.ext}").write_bytes(pic.data)
        plan = self.plan(n, chunked, first, seed)
        for kind, items in plan.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + len(items)
            for name, pic in items:
                self.delivered[name] = pic
        chunked = partial(write_chunked, pause=self.chunk_pause, chunks=6)
        fns = {"copy": write_copy, "rename": write_rename_in, "rsync": write_rsync, "chunked": chunked}
        for kind, fn in fns.items():
            items = plan[kind]
            k = max(1, min(len(items), 6 if kind == "chunked" else writers))
            for j in range(k):
                t = threading.Thread(target=self._write_all, args=(fn, items[j::k], pace), daemon=True,
                                     name=f"writer-{kind}-{j}")
                t.start()
                self._threads.append(t)
        index = {id(p): i for i, p in enumerate(self.pool)}
        for kind in ("proc-copy", "proc-rsync"):
            lines = "".join(f"{kind[5:]}\t{name}\tp{index[id(pic)]}{pic.ext}\n" for name, pic in plan[kind])
            proc = subprocess.Popen([sys.executable, "-c", _PROCESS_WRITER, str(self.inbox), str(self.pool_dir)],
                                    stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            self._procs.append(proc)
            threading.Thread(target=self._feed, args=(proc, lines), daemon=True).start()
        return self

    def _feed(self, proc: subprocess.Popen, lines: str) -> None:
        _, err = proc.communicate(lines.encode())
        if proc.returncode:
            self.errors.append(f"writer process exited {proc.returncode}: {err.decode(errors='replace')}")

    def _write_all(self, fn, items, pace: float) -> None:
        for name, pic in items:
            try:
                fn(self.inbox, name, pic.data, self.stage)
            except OSError as e:
                self.errors.append(f"{name}: {e}")
            if pace:
                time.sleep(pace)

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            p.wait(max(0.1, deadline - time.monotonic()))
        assert not self.errors, self.errors

    @property
    def finished(self) -> bool:
        return not any(t.is_alive() for t in self._threads) and all(p.poll() is not None for p in self._procs)


# -- the outbox checker -------------------------------------------------------------------------

class OutboxChecker:
    """Opens every file the moment it appears in the outbox and checks it is a whole image.

    A thread lists outbox/<q>/ every few milliseconds; each new visible name is opened at once
    and fully decoded (a half-written file fails to decode), and its size compared with its
    input's when known. Reason files in failed/ must be whole too (they end with their last line).
    """

    def __init__(self, outbox: Path, sizes: dict[str, tuple[int, int]] | None = None):
        self.outbox, self.failed = outbox, outbox / "failed"
        self.sizes = sizes if sizes is not None else {}
        self.seen: set[str] = set()
        self.reasons: set[str] = set()
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-checker", daemon=True)

    def __enter__(self) -> "OutboxChecker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self._sweep()  # whatever appeared since the last look

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sweep()
            time.sleep(0.01)

    def _sweep(self) -> None:
        for name in names(self.outbox):
            if name.startswith(".") or name in self.seen:
                continue
            path = self.outbox / name
            if path.is_dir():
                continue
            self.seen.add(name)
            self._check_image(path)
        for name in names(self.failed):
            if name.endswith(".reason.txt") and name not in self.reasons:
                self.reasons.add(name)
                try:
                    text = (self.failed / name).read_text(encoding="utf-8")
                except OSError as e:
                    self.problems.append(f"failed/{name}: cannot read ({e})")
                    continue
                if not text.rstrip().endswith("delete this note."):
                    self.problems.append(f"failed/{name}: a partial reason file ({len(text)} characters)")

    def _check_image(self, path: Path) -> None:
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size = im.size
        except Exception as e:  # anything: a half-written file shows up here
            self.problems.append(f"{path.name}: not a whole image when it appeared ({type(e).__name__}: {e})")
            return
        want = self.sizes.get(_input_of(path.name))
        if want is not None and size != want:
            self.problems.append(f"{path.name}: {size[0]}x{size[1]}, its input is {want[0]}x{want[1]}")


_NUMBERED = re.compile(r"^(?P<stem>.*?)(?:-(?P<n>\d+))?(?P<ext>\.[^.]*)$", re.DOTALL)


def _input_stem(name: str, tag: str) -> str | None:
    """'x_after-2.png', '_after' -> 'x' (the numbered suffix and extension dropped)."""
    m = _NUMBERED.match(name)
    if not m:
        return None
    stem = m["stem"]
    return stem[:-len(tag)] if stem.endswith(tag) else None


def _input_of(output: str) -> str | None:
    return _input_stem(output, "_after")


# -- accounting ---------------------------------------------------------------------------------

@dataclass
class Tally:
    """Where each delivered input ended."""

    inputs: int
    converted: int
    quarantined: int
    lost: list[str]           # neither an output nor a quarantined input
    twice: list[str]          # more than one output, or an output and a quarantine, or done twice
    stray: list[str]          # outputs, quarantined or done files that match no input
    leftover: list[str]       # still in the inbox or work/
    temp: list[str]           # temporary files left behind anywhere in the service's folders


def account(rig: Rig, delivered: list[str], q: str = "colorize") -> Tally:
    """Match the inputs against outbox/<q>/, its failed/ and done/<q>/."""
    stems = {}
    for name in delivered:
        stem = _input_stem(name, "_before")
        assert stem is not None, name
        stems[stem] = name
    outputs = _count(names(rig.outbox(q)), "_after")
    failed = _count([n for n in names(rig.failed(q)) if not n.endswith(".reason.txt")], "_before")
    done = _count(names(rig.done(q)), "_before")
    lost, twice = [], []
    for stem, name in stems.items():
        n_out, n_failed = outputs.pop(stem, 0), failed.pop(stem, 0)
        if n_out + n_failed == 0:
            lost.append(name)
        if n_out + n_failed > 1 or done.pop(stem, 0) > 1:
            twice.append(name)
    stray = [f"{k} x{v}" for d in (outputs, failed) for k, v in d.items()]
    leftover = [n for n in names(rig.inbox(q)) if not n.startswith(".")] + names(rig.work(q))
    return Tally(len(delivered), sum(1 for n in names(rig.outbox(q)) if not n.startswith(".")),
                 sum(1 for n in names(rig.failed(q)) if not n.endswith(".reason.txt")),
                 lost, twice, stray, leftover, temp_files(rig))


def _count(found: list[str], tag: str) -> dict[str, int]:
    """How many visible files there are per input stem."""
    counts: dict[str, int] = {}
    for n in found:
        if n.startswith("."):
            continue
        stem = _input_stem(n, tag)
        counts[stem if stem is not None else n] = counts.get(stem if stem is not None else n, 0) + 1
    return counts


def temp_files(rig: Rig) -> list[str]:
    """Hidden temporary files the service writes (.reverser-*) left anywhere under its three folders,
    and any entry left in work/ (claimed files, and lock files of instances no longer running)."""
    found = []
    for top in (rig.cfg.paths.inbox, rig.cfg.paths.outbox, rig.cfg.paths.state):
        for dirpath, dirnames, filenames in os.walk(top):
            for n in filenames + dirnames:
                if n.startswith(".reverser-") or n.startswith(".staging-"):
                    found.append(os.path.relpath(os.path.join(dirpath, n), rig.root))
    work = rig.cfg.state_dir("work")
    for dirpath, dirnames, filenames in os.walk(work):
        for n in filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), rig.root)
            if rel not in found:
                found.append(rel)
    return sorted(found)


def settled(rig: Rig, q: str = "colorize") -> int:
    """Inputs that have left the pipeline: done, or quarantined."""
    return len(names(rig.done(q))) + sum(1 for n in names(rig.failed(q)) if not n.endswith(".reason.txt"))


def poll(cond, timeout: float, what: str, rig: Rig | None = None, every: float = 0.1):
    """wait_for with the rig's service log in the failure message."""
    return wait_for(cond, timeout, what, every=every, log=rig.log if rig else None)
