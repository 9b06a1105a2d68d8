"""The checkout and the interpreter for child processes (`python -m daemon ...`) in tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATES = ROOT.parent / "shared" / "data" / "plates"
PYTHON = sys.executable


def child_env() -> dict:
    """Environment for a child `python -m daemon`: this checkout on the path, unbuffered, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    return env
