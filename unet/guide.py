"""Color points spread over a picture: an edge-aware sparse solve on the automatic result.

The automatic result is the prior. Each point's difference from it, in chroma
at the working size, is spread to the pixels that belong with it and fades
elsewhere: the correction u minimises

    sum over neighbours r~s of w_rs (u_r - u_s)^2  +  PULL * sum_r u_r^2  +  WEIGHT * sum_points (u_p - d_p)^2

(Levin, Lischinski and Weiss 2004, with the pull to zero that keeps the
automatic colors where no one spoke). w_rs = exp(-|f_r - f_s|^2 / 2 SIGMA^2)
over 8 neighbours, and f is the gray beside what the network saw there: its
chroma-bin probabilities (square roots, so distances are Hellinger's), cut to
their first RANK principal components. A gray edge stops the spread, and so
does a change of object the gray does not show (docs/color-points.md records
the designs tried and the figures).

A point fixes the chroma of its 3x3 pixels at the working size, to the color
asked at the picture's own lightness there (where the gamut allows), so the
result's Lab ab at a point is the point's.

Guide.solve factors the matrix once per picture. Guide.solve(live=True), for
a live view that adds and moves a few points at a time, keeps that factor
and one solved column per pointed pixel, and answers by the Woodbury identity
from them: the same correction, at the cost of the new points alone.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .frontal import FrontalFactor, plan
from .hints import STROKE_ALPHA, Hints

SIGMA = 0.04         # affinity scale, on gray in [0, 1]
FEATURE_GAIN = 0.6   # how far apart two pixels the network sees as different things are, against gray
RANK = 8             # principal components of the bin probabilities kept
PULL = 2e-3          # the pull to zero: weaker spreads each point farther
WEIGHT = 100.0       # a point's pull to its color, against the neighbours'
FADE = 0.0           # normalised spread: full correction where a point's reach is above this, fading below
RADIUS = 1           # a point fixes the (2 RADIUS + 1)^2 pixels around it
LIVE_COLUMNS = 512   # solved columns a live view keeps (some 100 kB each at 192x128)

_SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
_D65 = np.array([0.95047, 1.0, 1.08883])
_LUMA = np.array([0.299, 0.587, 0.114])
_TO_CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _srgb_to_ab(rgb: np.ndarray) -> np.ndarray:
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    f = (c @ _SRGB_TO_XYZ.T) / _D65
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16.0 / 116.0)
    return np.stack([500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def _lab_to_srgb(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    fy = (L + 16.0) / 116.0
    f = np.stack([fy + ab[:, 0] / 500.0, fy, fy - ab[:, 1] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f ** 3, (f - 16.0 / 116.0) / 7.787) * _D65
    lin = np.clip(xyz @ np.linalg.inv(_SRGB_TO_XYZ).T, 0.0, 1.0)
    return np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)


def target_chroma(colors: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB 0..255 and (n,) luma in [0, 1] -> (n, 2) Cb/Cr giving those colors' Lab a, b at that luma.

    The lightness L that gives the asked a, b the pixel's own luma is found by
    bisection; where the gamut cannot hold a, b at that luma, the nearest
    sRGB color is taken, so the hue holds and the saturation gives way.
    """
    ab = _srgb_to_ab(np.asarray(colors, dtype=np.float64) / 255.0)
    lo, hi = np.zeros(len(ab)), np.full(len(ab), 100.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        below = _lab_to_srgb(mid, ab) @ _LUMA < luma
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return _lab_to_srgb((lo + hi) / 2, ab) @ _TO_CHROMA.T


def guide_features(probs: torch.Tensor | None, size: tuple[int, int]) -> np.ndarray | None:
    """(K, hn, wn) bin probabilities at the network's grid -> (RANK, h, w) float32 at the working size, or None."""
    if probs is None:
        return None
    k, hn, wn = probs.shape
    x = probs.float().clamp(min=0).sqrt().reshape(k, -1)
    x = x - x.mean(dim=1, keepdim=True)
    # The leading principal directions keep most of the distances between pixels at RANK/K of the cost.
    _, u = torch.linalg.eigh(x @ x.T)
    proj = (u[:, -RANK:].T @ x).reshape(-1, 1, hn, wn)
    up = F.interpolate(proj, size=size, mode="bilinear", align_corners=False)[:, 0]
    return up.numpy() * np.float32(FEATURE_GAIN)


def upsample_chroma(c: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(2, hn, wn) float chroma -> (2, h, w), bicubic in float as the result's own upsampling."""
    h, w = size
    return np.stack([np.asarray(Image.fromarray(ch.astype(np.float32), "F").resize((w, h), Image.Resampling.BICUBIC))
                     for ch in c]).astype(np.float64)


def edge_weights(gray: np.ndarray, feats: np.ndarray | None) -> np.ndarray:
    """The affinities of a working-size picture's 8-neighbour edges (diagonals at half weight), in frontal.edges order."""
    f = gray[None].astype(np.float32) if feats is None else np.concatenate([gray[None].astype(np.float32), feats])
    scale = np.float32(-1.0 / (2 * SIGMA ** 2))
    out = []
    for a, b, half in ((f[:, :, :-1], f[:, :, 1:], False), (f[:, :-1], f[:, 1:], False),
                       (f[:, :-1, :-1], f[:, 1:, 1:], True), (f[:, :-1, 1:], f[:, 1:, :-1], True)):
        d = a - b
        wt = np.exp(np.einsum("chw,chw->hw", d, d) * scale).ravel()
        out.append(wt * np.float32(0.5) if half else wt)
    return np.concatenate(out)


@dataclass
class Guide:
    """One picture's propagation at the working size: its gray, the automatic chroma, the affinities."""

    gray: np.ndarray          # (h, w) float64 in [0, 1]
    prior: np.ndarray         # (2, h, w) float64 Cb/Cr
    weights: np.ndarray       # (edges,) float32 affinities, in frontal.edges order
    degree: np.ndarray        # (n,) float64 summed affinity of each pixel
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _factor: object = field(default=None, repr=False)
    _columns: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def build(cls, gray: np.ndarray, chroma: np.ndarray, probs: torch.Tensor | None = None) -> "Guide":
        """gray (h, w) in [0, 1] at the working size; chroma (2, hn, wn) and probs (K, hn, wn) at the network's."""
        size = gray.shape
        gray = np.asarray(gray, dtype=np.float64)
        wt = edge_weights(gray, guide_features(probs, size))
        p = plan(*size)
        degree = np.bincount(p.a, wt, p.n) + np.bincount(p.b, wt, p.n)
        return cls(gray, upsample_chroma(np.asarray(chroma), size), wt, degree)

    @property
    def size(self) -> tuple[int, int]:
        return self.gray.shape

    def constraints(self, hints: Hints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hints -> (pixel indices, weights, chroma corrections (m, 2)), one row per distinct pixel."""
        h, w = self.size
        idx, wts, tgt = [], [], []
        if len(hints):
            r = np.clip((hints.ys * h).astype(int), 0, h - 1)
            c = np.clip((hints.xs * w).astype(int), 0, w - 1)
            t = target_chroma(hints.colors, self.gray[r, c])
            for dr in range(-RADIUS, RADIUS + 1):
                for dc in range(-RADIUS, RADIUS + 1):
                    idx.append(np.clip(r + dr, 0, h - 1) * w + np.clip(c + dc, 0, w - 1))
                    tgt.append(t)
                    wts.append(np.full(len(r), WEIGHT))
        if hints.strokes is not None:
            layer = np.asarray(hints.strokes.convert("RGBa").resize((w, h), Image.Resampling.BOX), dtype=np.float64)
            alpha = layer[..., 3] / 255.0
            on = np.flatnonzero(alpha.ravel() * 255.0 >= STROKE_ALPHA)
            rgb = layer[..., :3].reshape(-1, 3)[on] / alpha.ravel()[on, None]
            idx.append(on)
            tgt.append(target_chroma(np.clip(rgb, 0, 255), self.gray.ravel()[on]))
            wts.append(np.full(len(on), WEIGHT))
        if not idx:
            return np.zeros(0, int), np.zeros(0), np.zeros((0, 2))
        idx, wts, tgt = np.concatenate(idx), np.concatenate(wts), np.concatenate(tgt)
        # A pixel two points share takes the mean of their colors, at their summed weight.
        pix, inv = np.unique(idx, return_inverse=True)
        weight = np.bincount(inv, wts, len(pix))
        want = np.stack([np.bincount(inv, wts * tgt[:, k], len(pix)) for k in (0, 1)], 1) / weight[:, None]
        prior = self.prior.reshape(2, -1)[:, pix].T
        return pix, weight, want - prior

    def solve(self, hints: Hints, live: bool = False) -> np.ndarray:
        """Hints -> (2, h, w) float32 chroma at the working size: the prior plus the spread correction."""
        pix, weight, delta = self.constraints(hints)
        if not len(pix):
            return self.prior.astype(np.float32)
        if FADE:   # a third right-hand side: how much of the points reaches each pixel
            delta = np.concatenate([delta, np.ones((len(pix), 1))], axis=1)
        with self._lock:
            u = self._woodbury(pix, weight, delta) if live else self._direct(pix, weight, delta)
        if FADE:
            u = u[:, :2] / np.maximum(u[:, 2:], FADE)
        return (self.prior + u.T.reshape(self.prior.shape)).astype(np.float32)

    def _factor_of(self, diag: np.ndarray) -> FrontalFactor:
        """L + diag(diag), factored (frontal.py)."""
        return FrontalFactor(plan(*self.size), np.concatenate([-self.weights, -self.weights, diag]))

    def _direct(self, pix, weight, delta) -> np.ndarray:
        diag = self.degree + PULL
        diag[pix] += weight
        rhs = np.zeros((len(diag), delta.shape[1]))
        rhs[pix] = weight[:, None] * delta
        return self._factor_of(diag).solve(rhs)

    def _woodbury(self, pix, weight, delta) -> np.ndarray:
        """(M0 + P D P^T) u = P D d with M0 = L + PULL I factored once: u = Z (D^-1 + P^T Z)^-1 d, Z = M0^-1 P."""
        if self._factor is None:
            self._factor = self._factor_of(self.degree + PULL)
        if len(pix) > LIVE_COLUMNS:   # more pixels than columns kept: one direct solve is cheaper
            return self._direct(pix, weight, delta)
        new = [p for p in pix if p not in self._columns]
        if new:
            e = np.zeros((len(self.degree), len(new)))
            e[new, np.arange(len(new))] = 1.0
            for p, col in zip(new, self._factor.solve(e).T):
                self._columns[p] = col.astype(np.float32)
        for p in pix:
            self._columns.move_to_end(p)
        while len(self._columns) > LIVE_COLUMNS:
            self._columns.popitem(last=False)
        Z = np.stack([self._columns[p] for p in pix], axis=1).astype(np.float64)   # (n, m)
        y = np.linalg.solve(np.diag(1.0 / weight) + Z[pix], delta)
        return Z @ y

    def picture(self, chroma: np.ndarray) -> Image.Image:
        """(2, h, w) chroma -> the working-size RGB picture with the gray's lightness (for a live view)."""
        planes = [Image.fromarray(np.round(self.gray * 255.0).clip(0, 255).astype(np.uint8), "L")]
        planes += [Image.fromarray((ch * 255.0 + 128.0).round().clip(0, 255).astype(np.uint8), "L") for ch in chroma]
        return Image.merge("YCbCr", planes).convert("RGB")
