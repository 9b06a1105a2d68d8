"""The README's commands work as written after `make run` and `. .venv/bin/activate`: the `reverser`
on that PATH is the project's, and every sub-command the README's Commands block lists is one it knows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_every_readme_command_is_a_reverser_subcommand_on_the_activated_path():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ". .venv/bin/activate" in readme
    listed = set(re.findall(r"^reverser (\w+) ", readme, re.MULTILINE))
    assert {"run", "convert", "train", "status", "models", "check"} <= listed
    bin_dir = Path(sys.executable).parent          # the virtual environment's bin/, as activate puts it first
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    for sub in sorted(listed):
        r = subprocess.run(["reverser", sub, "--help"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (sub, r.stderr)
