"""Which files a process still holds open for writing, from /proc (Linux), without the writer's help.

A file a writer still holds open is not complete, whatever its mtime says: a
writer may pause longer than any settle time. Each /proc/<pid>/fd/<n> link
names an open file, and /proc/<pid>/fdinfo/<n> its open flags.

Chosen over fcntl leases (F_SETLEASE fails with EAGAIN while another process
holds the file open for writing): a lease can only be taken on a file the
service owns (or with CAP_LEASE), a lease broken by a new opener delivers
SIGIO, and it tells nothing about a file held read-only. The limit of this
check, stated plainly: it sees the processes /proc shows this one, which are
those of its own user (all of them as root). Under the shipped systemd unit
(its own user, ProtectProc=invisible) that means writers running as the
service's user only; writers of other users, in other containers' PID
namespaces, and on other hosts of a network share are not seen, and for
those a file counts as complete by its events and its settle time alone.
"""

from __future__ import annotations

import os
from pathlib import Path

O_ACCMODE, O_RDONLY = 0o3, 0o0


def open_for_writing(paths: list[Path]) -> tuple[dict[Path, int], bool]:
    """({path: pid of a process holding it open for writing}, whether every process's files could be seen)."""
    wanted = {os.fsencode(os.path.abspath(p)): p for p in paths}
    found: dict[Path, int] = {}
    complete = True
    if not wanted:
        return found, complete
    try:
        pids = [e for e in os.listdir(b"/proc") if e.isdigit()]
    except OSError:
        return found, False
    me = str(os.getpid()).encode()
    for pid in pids:
        if pid == me:
            continue   # our own descriptors are readers (decoding), never the file's writer
        folder = b"/proc/" + pid + b"/fd"
        try:
            fds = os.listdir(folder)
        except FileNotFoundError:
            continue   # it ended meanwhile
        except OSError:
            complete = False   # another user's process (or hidden): its files cannot be seen
            continue
        for fd in fds:
            try:
                target = os.readlink(folder + b"/" + fd)
            except OSError:
                continue
            path = wanted.get(target)
            if path is None or path in found:
                continue
            if _writes(pid, fd):
                found[path] = int(pid)
    return found, complete


def _writes(pid: bytes, fd: bytes) -> bool:
    """Whether descriptor fd of process pid was opened for writing (O_WRONLY or O_RDWR)."""
    try:
        with open(b"/proc/" + pid + b"/fdinfo/" + fd, "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8) & O_ACCMODE != O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return True   # it holds the file open and we cannot tell how: count it as a writer
