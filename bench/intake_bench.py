"""The pairs intake's filing rate with few pairs filed and with many: it should not fall as pairs accumulate.

    python bench/intake_bench.py [--pairs 2000] [--photos 100]

One run, one machine: --photos small color photos (lone colorize pairs) are
filed by the intake the service uses (daemon.learning.intake.PairIntake, in
this process, without the watcher) into an empty pairs folder, then into a
pairs folder that already holds --pairs pairs (written straight into it, with
their index lines). It prints both rates, photos per second, and their ratio:
1.0 is a filing cost that does not grow with the pairs filed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.core.config import load_config  # noqa: E402
from daemon.learning.intake import INDEX, PairIntake  # noqa: E402


def _photo(path: Path, seed: int) -> None:
    a = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(a, "RGB").save(path, format="PNG")


def _config(root: Path) -> Path:
    model = Path(__file__).resolve().parents[1] / "models" / "colorize"
    cfg = root / "config.toml"
    cfg.write_text(f'[paths]\ninbox = "inbox"\noutbox = "outbox"\nstate = "var"\n'
                   f'[queues.colorize]\ntask = "colorize"\nmodel = "{model}"\n')
    return cfg


def _seed(pairs_dir: Path, n: int) -> None:
    """n filed pairs as the intake leaves them: NAME_after.png files and their index lines."""
    pairs_dir.mkdir(parents=True, exist_ok=True)
    _photo(pairs_dir / "seed.png", 0)
    data = (pairs_dir / "seed.png").read_bytes()
    (pairs_dir / "seed.png").unlink()
    with open(pairs_dir / INDEX, "w") as index:
        for i in range(n):
            name = f"old{i:06d}"
            (pairs_dir / f"{name}_after.png").write_bytes(data)
            fake = hashlib.sha256(name.encode()).hexdigest()
            index.write(json.dumps({"name": name, "files": [f"{name}_after.png"],
                                    "sha256": {f"{name}_after.png": fake}, "lone_color": True}) + "\n")


def _rate(cfg_path: Path, photos: int, first_seed: int) -> float:
    cfg = load_config(cfg_path)
    intake = PairIntake(cfg, "colorize", log=_Quiet())
    inbox = cfg.train_inbox("colorize")
    inbox.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(photos):
        p = inbox / f"new{first_seed + i:06d}.png"
        _photo(p, first_seed + i)
        paths.append(p)
    t = time.perf_counter()
    for p in paths:
        outcome = intake.handle(p)
        assert outcome == "filed", (p, outcome)
    return photos / (time.perf_counter() - t)


class _Quiet:
    """A logger that drops the intake's one line per filing (the bench times filing, not the terminal)."""

    def __getattr__(self, name):
        return lambda *a, **k: self if name in ("opt", "bind") else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000, help="pairs already filed in the second run")
    ap.add_argument("--photos", type=int, default=100, help="photos filed in each run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        few_root, many_root = Path(tmp) / "few", Path(tmp) / "many"
        for root in (few_root, many_root):
            root.mkdir()
        few = _rate(_config(few_root), args.photos, 1)
        _seed(many_root / "var" / "pairs" / "colorize", args.pairs)
        many = _rate(_config(many_root), args.photos, 100_001)
    print(f"filing {args.photos} photos: {few:.0f}/s into an empty pairs folder, {many:.0f}/s beside "
          f"{args.pairs} pairs; ratio {many / few:.2f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
