"""Training data a tiny model learns in seconds, and a tiny untrained champion to improve on.

The rule: color follows brightness (dark is blue, bright is orange), on gray
pictures of stripes at random angles. Half a minute of CPU teaches it to a
two-level U-Net; scrambling the afters among the pairs makes it unlearnable.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image


def scene(seed: int, size=(48, 32)) -> np.ndarray:
    """A gray picture (H, W) in 0..255: soft stripes at a random angle and phase."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, f = rng.uniform(0, 2 * np.pi), rng.uniform(1, 3)
    lum = 128 + 100 * np.sin((xx * np.cos(a) + yy * np.sin(a)) / w * f * np.pi + rng.uniform(0, 2 * np.pi))
    return np.clip(lum, 0, 255)


def by_rule(lum: np.ndarray) -> Image.Image:
    """The color truth of a gray picture: dark -> blue, bright -> orange, its own luminance kept."""
    t = (lum - 128) / 128.0
    ycc = np.stack([lum, 128 - 60 * t, 128 + 50 * t], -1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(ycc, "YCbCr").convert("RGB")


def write_pairs(folder: Path, n: int, scramble: bool = False, prefix: str = "s", start: int = 0) -> Path:
    """n pairs NAME_before.png (gray) + NAME_after.png (color) in folder; scramble shuffles the afters."""
    folder.mkdir(parents=True, exist_ok=True)
    grays = [scene(start + i) for i in range(n)]
    afters = [by_rule(g) for g in grays]
    if scramble:
        order = list(range(n))
        random.Random(1).shuffle(order)
        afters = [afters[j] for j in order]
    for i, (g, a) in enumerate(zip(grays, afters)):
        Image.fromarray(g.astype(np.uint8), "L").save(folder / f"{prefix}{start + i:03d}_before.png")
        a.save(folder / f"{prefix}{start + i:03d}_after.png")
    return folder


def tiny_champion(folder: Path) -> Path:
    """An untrained colorize model folder, smaller than the tiny_models fixture's (32 px working size)."""
    import torch

    from unet import TaskConfig, UNetConfig, new_model, save_model

    torch.manual_seed(0)
    model = new_model(TaskConfig("colorize", work_long=32, bins_per_axis=6), UNetConfig(widths=(8, 16), middle_blocks=1))
    return save_model(model, folder, version=1)
