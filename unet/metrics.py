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


# CIE Lab (D65), as skimage.color.rgb2lab computes it: sRGB -> linear -> XYZ -> Lab.
_SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def rgb_to_ab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB on 0..255 -> (..., 2) CIE Lab a and b (D65)."""
    c = rgb / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = (c @ _SRGB_TO_XYZ.T) / _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


class AbAuc:
    """The rebalanced raw-accuracy AuC of Zhang, Isola and Efros (2016), in percent, over a set of results.

    Each pixel's error is the distance between its result's and its truth's
    Lab ab, at 128x192 (the long side 192). Pixels are weighted by the inverse
    frequency, over the whole set, of their true ab's bin on a 10-unit grid
    (centred on multiples of 10),
    so a rare vivid color counts as much as all the browns together; the
    score is the weighted share of pixels within t of the truth, averaged
    over t = 0, 1, ..., 150. Gray and sepia results score low on it even
    where their PSNR is fair: it asks for the right hue, not a safe one.
    """

    THRESHOLDS = 151
    SIZE = (128, 192)   # short, long side

    def __init__(self):
        self.hits: dict[tuple[int, int], np.ndarray] = {}   # bin -> pixels within t, t = 0..150
        self.counts: dict[tuple[int, int], int] = {}

    def _ab(self, im: Image.Image, size: tuple[int, int]) -> np.ndarray:
        return rgb_to_ab(np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float64))

    def add(self, result: Image.Image, truth: Image.Image) -> None:
        """Count one result against its truth."""
        short, long = self.SIZE
        size = (long, short) if truth.width >= truth.height else (short, long)
        a, b = self._ab(result, size).reshape(-1, 2), self._ab(truth, size).reshape(-1, 2)
        err = np.ceil(np.hypot(*(a - b).T)).astype(np.int64)    # within t exactly when ceil(err) <= t
        bins = np.floor(b / 10.0 + 0.5).astype(np.int64)   # bins centred on multiples of 10, as Zhang's grid
        keys, inverse = np.unique(bins, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for i, key in enumerate(map(tuple, keys)):
            e = err[inverse == i]
            hist = np.bincount(np.minimum(e, self.THRESHOLDS), minlength=self.THRESHOLDS + 1)
            within = np.cumsum(hist[: self.THRESHOLDS])
            self.hits[key] = self.hits.get(key, 0) + within
            self.counts[key] = self.counts.get(key, 0) + len(e)

    def score(self) -> float:
        """The AuC in percent (nan for an empty set)."""
        if not self.counts:
            return float("nan")
        # Inverse-frequency weights make every occupied bin weigh the same: the mean of per-bin accuracies.
        acc = np.mean([self.hits[k] / self.counts[k] for k in self.counts], axis=0)   # (151,)
        return float(100.0 * acc.mean())


def ab_auc(results, truths) -> float:
    """AbAuc over paired lists of result and truth images."""
    auc = AbAuc()
    for r, t in zip(results, truths):
        auc.add(r, t)
    return auc.score()
