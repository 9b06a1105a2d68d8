"""Other filesystems for the tests: a second one for moves across filesystems, a small tmpfs to fill up."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest


def other_filesystem(near: Path) -> Path:
    """/dev/shm when it is a filesystem other than near's; the calling test is skipped when there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(near).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    return shm


@contextlib.contextmanager
def small_tmpfs(at: Path, size: str = "16m"):
    """A tmpfs of size mounted at `at` while inside (a disk the test can fill or make read-only); the test is
    skipped where this process may not mount one (it needs root, or CAP_SYS_ADMIN)."""
    at.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(at)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"needs a small tmpfs mounted for the test, and mount said: {r.stderr.strip() or r.returncode}")
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill folder's filesystem with one file until at most `leave` bytes are free; return the file."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 16)
        while True:
            free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[:max(4096, min(len(chunk), free - leave))])
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    return filler


@contextlib.contextmanager
def read_only(at: Path):
    """at read-only while inside: a read-only bind mount of it over itself (files a process holds open for
    writing, which forbid a plain remount, keep their old mount); skipped where it cannot be mounted."""
    r = subprocess.run(["mount", "--bind", str(at), str(at)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"needs a read-only bind mount for the test, and mount said: {r.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(at)], check=True, capture_output=True)
        yield at
    finally:
        subprocess.run(["umount", str(at)], capture_output=True)
