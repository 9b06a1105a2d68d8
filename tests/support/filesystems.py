"""A second filesystem for the tests of moves across filesystems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def other_filesystem(near: Path) -> Path:
    """/dev/shm when it is a filesystem other than near's; the calling test is skipped when there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(near).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    return shm
