"""Which service instances are alive: each holds a lock beside the claims it makes (spool.py), and a claim
whose instance holds no lock any more was left by one that crashed or was killed.

    <state>/work/.owners/<id>.lock                  claims in <state>/work/<q>/
    inbox/<q>/.reverser-work/.owners/<id>.lock      claims in that fallback folder (an inbox on another
                                                    filesystem, which every host sharing it sees)

Locks (flock), not pids, decide, so a reused pid (after a reboot, or pid 1 in
two containers) cannot hide a crashed instance's files. A lock file is locked
under a hidden name and then renamed into place, so one seen under its real
name is held by a live instance or by none; a dead one's is tidied away.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import secrets
import threading
import time
from pathlib import Path


class Owner:
    """This process's identity in tickets, and the locks that tell other instances it is alive.

    A lock lives beside the claims it guards: in <state>/work/.owners/ for claims in
    <state>/work/, and in inbox/<q>/.reverser-work/.owners/ for claims in that
    fallback folder, which every instance sharing the inbox (on other hosts, with
    state folders of their own) sees. join() adds such a folder.
    """

    def __init__(self, work_root: Path):
        self.id = f"{os.getpid()}x{secrets.token_hex(3)}"
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._fds: dict[Path, int] = {}   # owners folder -> our locked lock file in it
        self.dir = self.join(work_root)

    def join(self, work: Path) -> Path:
        """Hold a lock in work/.owners/ too (once), for claims made into work; return that folder."""
        folder = work / ".owners"
        with self._lock:
            if folder in self._fds:
                return folder
            folder.mkdir(parents=True, exist_ok=True)
            # Locked under a hidden name, then renamed into place: a lock file seen under
            # its real name is always held by a live instance, or by none (it was killed).
            hidden = folder / f".{self.id}.lock"
            fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(hidden, folder / f"{self.id}.lock")
            except OSError:
                os.close(fd)
                hidden.unlink(missing_ok=True)
                raise
            self._fds[folder] = fd
        _sweep(folder, self.id)
        return folder

    def ticket(self) -> str:
        with self._lock:
            return f"{self.id}-{next(self._seq)}"

    def is_alive(self, owner_id: str, where: Path | None = None) -> bool:
        """Whether the instance that wrote a ticket still runs: it holds its lock in where/.owners/ (the
        folder of the claim), or, without where, in any owners folder this instance knows."""
        if owner_id == self.id:
            return True
        folders = [where / ".owners"] if where is not None else list(self._fds)
        return any(_held(folder / f"{owner_id}.lock") for folder in folders)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for folder, fd in fds.items():
            os.close(fd)
            (folder / f"{self.id}.lock").unlink(missing_ok=True)


def _held(path: Path) -> bool:
    """Whether a lock file is locked by a live process; a dead instance's lock file is tidied away."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock we may just have taken
    path.unlink(missing_ok=True)
    return False


def _sweep(folder: Path, me: str, grace: float = 60.0) -> None:
    """Remove the lock files that killed instances left in an owners folder."""
    now = time.time()
    for e in os.scandir(folder):
        if not e.name.endswith(".lock") or e.name in (f"{me}.lock", f".{me}.lock"):
            continue
        if not e.name.startswith("."):
            _held(Path(e.path))
            continue
        try:  # killed between creating its lock and naming it: only old ones, never a starting one
            if now - e.stat().st_mtime < grace:
                continue
            fd = os.open(e.path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(e.path)
        except OSError:
            pass
        finally:
            os.close(fd)
