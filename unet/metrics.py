"""Scores a person would quote: PSNR and colorfulness, beside the naive baselines."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def psnr(result: Image.Image, truth: Image.Image) -> float:
    """RGB PSNR in dB on [0, 1]; a gray truth is compared as gray (both as L)."""
    if truth.mode == "L":
        a = np.asarray(result.convert("L"), dtype=np.float64)
        b = np.asarray(truth, dtype=np.float64)
    else:
        a, b = _rgb(result), _rgb(truth)
    if a.shape != b.shape:
        raise ValueError(f"result {a.shape} and truth {b.shape} differ in size")
    mse = np.mean((a / 255.0 - b / 255.0) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def colorfulness(im: Image.Image) -> float:
    """Hasler and Suesstrunk (2003), on 0..255: 0 for gray, about 30 for these plates' truths."""
    a = _rgb(im)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def tint(gray: Image.Image, cb: float, cr: float) -> Image.Image:
    """A gray image with a constant chroma (offsets from neutral, on 0..255): the mean-tint baseline."""
    size = gray.size
    planes = [gray.convert("L")] + [Image.new("L", size, int(round(128 + c))) for c in (cb, cr)]
    return Image.merge("YCbCr", planes).convert("RGB")


def mean(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return float(sum(values) / len(values)) if values else float("nan")
