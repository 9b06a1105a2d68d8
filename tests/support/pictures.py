"""Inputs for the reliability suite: a pool of small, distinct befores (gray and color, PNG and JPEG)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import make_image


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
