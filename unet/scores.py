"""The full-size scores a model is judged by: evaluate() over pairs, the baselines beside it, as Scores.

Scores go into model folders' meta.json, result.json and report.json as as_dict() writes them (the keys
of what was measured only, as before), and come back through from_dict(); the promotion rule
(daemon/learning/promotion.py) reads them typed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .checkpoint import Model
from .color import rgb_to_ycc
from .data import PairRef, PairSet, load_pair
from .images import plain
from .metrics import AbAuc, colorfulness, mean, psnr, tint
from .predictor import Predictor


@dataclass(frozen=True)
class Scores:
    """A model's mean scores over some pairs, each pair's PSNR, and the baselines on the same pairs.
    None: not measured (a translate model has no AuC and no mean-tint baseline)."""

    psnr: float = math.nan                   # dB, the model's result against the truth
    psnr_each: tuple[float, ...] = ()        # each pair's, in the order of the pairs: the paired test's input
    pairs: int = 0
    colorfulness: float | None = None        # Hasler and Suesstrunk's, of the results
    truth_colorfulness: float | None = None
    gray_psnr: float | None = None           # the gray input itself as the result
    tint_psnr: float | None = None           # colorize: the gray tinted with the training afters' mean color
    auc: float | None = None                 # colorize: ab AuC, right hues (Zhang, Isola and Efros 2016)
    gray_auc: float | None = None
    train_mean_chroma: tuple[float, float] | None = None   # colorize: the mean tint's color (Cb, Cr on 0..255)

    def as_dict(self) -> dict:
        """For JSON: the fields measured, as lists where they are sequences."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name == "psnr_each" and not v and not self.pairs):
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "Scores | None":
        """Scores as as_dict() wrote them (unknown keys ignored, missing ones not measured); None for None."""
        if d is None:
            return None
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("psnr_each", "train_mean_chroma"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def described(self) -> str:
        """One line for a log: the figures measured."""
        return ", ".join(f"{f.name} {getattr(self, f.name):.2f}" for f in fields(self)
                         if isinstance(getattr(self, f.name), float))


def mean_chroma(data: PairSet) -> tuple[float, float]:
    """Mean (Cb, Cr) offsets of the training afters on 0..255: the mean-tint baseline's color."""
    total, n = torch.zeros(2), 0
    for _, after, _ in data.items:
        c = rgb_to_ycc(after[None].float() / 255.0)[0, 1:]
        total += c.sum(dim=(1, 2))
        n += c[0].numel()
    return tuple((total / max(n, 1) * 255).tolist())


def evaluate(model: Model, pairs: list[PairRef], mean_chroma: tuple[float, float] | None = None,
             device: str = "cpu") -> Scores:
    """Full-resolution scores over pairs: the model, and the baselines beside it."""
    pred = Predictor(model, device=device, max_batch=8)
    each, color, truth_color, gray_psnr, tint_psnr = [], [], [], [], []
    auc, gray_auc = AbAuc(), AbAuc()   # hue right, not only vivid (colorize): the model's and gray's
    colorize = model.task.name == "colorize"
    tint_chroma = mean_chroma or tuple(model.meta.get("train_mean_chroma") or (0.0, 0.0))
    for p in pairs:
        before, after = load_pair(p)
        out = pred.predict([plain(before)])[0]
        truth = after if colorize or model.task.cfg.out_channels == 3 else after.convert("L")
        each.append(psnr(out, truth))
        color.append(colorfulness(out))
        truth_color.append(colorfulness(truth))
        gray = before.convert("L")
        gray_psnr.append(psnr(gray.convert("RGB") if truth.mode == "RGB" else gray, truth))
        if colorize:
            tint_psnr.append(psnr(tint(gray, *tint_chroma), truth))
            auc.add(out, truth)
            gray_auc.add(gray, truth)
    if not pairs:
        return Scores()
    return Scores(psnr=mean(each), psnr_each=tuple(round(v, 4) for v in each), pairs=len(pairs),
                  colorfulness=mean(color), truth_colorfulness=mean(truth_color), gray_psnr=mean(gray_psnr),
                  tint_psnr=mean(tint_psnr) if colorize else None, auc=auc.score() if colorize else None,
                  gray_auc=gray_auc.score() if colorize else None,
                  train_mean_chroma=tuple(tint_chroma) if colorize else None)
