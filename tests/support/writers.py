"""The ways files arrive in an inbox (a copy, a rename, rsync, a slow chunked writer, other processes),
and a Flood: many befores delivered by mixed writers at once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tests.support.pictures import Picture


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
