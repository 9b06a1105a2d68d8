"""Generated test pictures: smooth, colorful, of any size and mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_image(path: Path, size=(96, 64), mode="RGB", seed=0, **save) -> Path:
    """A smooth, colorful test picture (gradients and a disc) of any size and mode, saved to path."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(xx / max(w, 1) * 3 + rng.uniform(0, 3))
    g = 127 + 120 * np.cos(yy / max(h, 1) * 2 + rng.uniform(0, 3))
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2
    b = np.where(disc, 220.0, 40.0)
    rgb = Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")
    im = rgb if mode == "RGB" else rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **save)
    return path
