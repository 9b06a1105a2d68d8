"""Training pairs: finding them in folders, splitting them, serving augmented batches."""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import ImageError, open_image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif"}
_HALF = re.compile(r"^(?P<name>.+)_(?P<half>before|after)$", re.IGNORECASE)


@dataclass(frozen=True)
class PairRef:
    name: str              # NAME, shared by NAME_before.* and NAME_after.*
    before: Path | None    # None: derive it from after (a lone color image, colorize only)
    after: Path


def find_pairs(folders, allow_lone_color: bool = False, swap: bool = False) -> list[PairRef]:
    """Pairs NAME_before.* with NAME_after.* across folders; with allow_lone_color, other color images too.

    A lone image is only a pair when it is in color; whether it is is decided
    when it is loaded (load_pair raises ImageError for a gray one). swap reads
    the folders the other way round: NAME_after is the input, NAME_before the
    target (a reverse model from colorization pairs, say).
    """
    halves: dict[str, dict[str, Path]] = defaultdict(dict)
    lone: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: pairs folder not found")
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTS or not path.is_file():
                continue
            m = _HALF.match(path.stem)
            if m:
                halves[m["name"]][m["half"].lower()] = path
            else:
                lone.append(path)
    first, second = ("after", "before") if swap else ("before", "after")
    pairs = [PairRef(n, h[first], h[second]) for n, h in halves.items() if len(h) == 2]
    if allow_lone_color and not swap:
        pairs += [PairRef(n, None, h["after"]) for n, h in halves.items() if set(h) == {"after"}]
        pairs += [PairRef(p.stem, None, p) for p in lone]
    return sorted(pairs, key=lambda p: p.name)


def is_val(name: str, val_percent: float) -> bool:
    """Deterministic split by the pair's name: a pair never changes sides as data grows."""
    # A name's bytes as they are on disk: one that is not UTF-8 arrives with surrogate escapes.
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:4], "big")
    return (h % 10000) < val_percent * 100


def split(pairs: list[PairRef], val_percent: float) -> tuple[list[PairRef], list[PairRef]]:
    train = [p for p in pairs if not is_val(p.name, val_percent)]
    val = [p for p in pairs if is_val(p.name, val_percent)]
    return train, val


def fingerprint(pairs: list[PairRef]) -> str:
    """A hash of the pairs' names and bytes: same data, same fingerprint."""
    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda p: p.name):
        h.update(p.name.encode("utf-8", "surrogateescape"))
        for path in (p.before, p.after):
            if path is not None:
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def load_pair(p: PairRef, max_pixels: int | None = None) -> tuple[Image.Image, Image.Image]:
    """(before, after) as L/RGB images of one size; a lone color image gives its own luminance."""
    after = open_image(p.after, max_pixels).image
    if p.before is None:
        if after.mode != "RGB" or _is_gray(after):
            raise ImageError(f"{p.after}: a lone image must be in color to make a pair (its gray is derived)")
        return after.convert("L"), after
    before = open_image(p.before, max_pixels).image
    if before.size != after.size:
        # Same picture at another resolution (a re-scan, a thumbnail): resize the after.
        before_ratio = before.size[0] / before.size[1]
        after_ratio = after.size[0] / after.size[1]
        if abs(before_ratio / after_ratio - 1) > 0.02:
            raise ImageError(f"{p.before.name} is {before.size[0]}x{before.size[1]} but {p.after.name} is "
                             f"{after.size[0]}x{after.size[1]}: the halves of a pair must show the same picture")
        after = after.resize(before.size, Image.Resampling.LANCZOS)
    return before, after


def _is_gray(im: Image.Image) -> bool:
    a = np.asarray(im.resize((64, 64)), dtype=np.int16)
    return int(np.abs(a - a.mean(axis=2, keepdims=True)).max()) <= 3


def _u8(im: Image.Image, channels: int) -> torch.Tensor:
    im = im.convert("L" if channels == 1 else "RGB")
    a = torch.from_numpy(np.array(im, dtype=np.uint8))
    return a[None] if a.ndim == 2 else a.permute(2, 0, 1).contiguous()


class PairSet:
    """Pairs held in memory at a little over working size, served as augmented batches.

    Images are grouped by working-size bucket (as the Predictor does at
    inference), so a batch is stacked without padding and the network trains
    on the framing it will see: the whole picture at the working size.
    floor, when given, maps each pair's full-size (before, after) to a number
    the loss wants beside it (see objective.error_floor).
    """

    def __init__(self, pairs: list[PairRef], shape_for, in_channels: int,
                 margin: float = 1.4, log=None, floor=None):
        self.items: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] = []
        self.names: list[str] = []
        self.floors: list[float] = []
        for p in pairs:
            try:
                before, after = load_pair(p)
            except (ImageError, OSError) as e:
                if log:
                    log(f"skipping pair {p.name}: {e}")
                continue
            pair_floor = floor(before, after) if floor else 0.0
            key = shape_for(before.size)
            h, w = key
            # Keep a margin above working size so random crops are not upsampled blur.
            scale = min(1.0, margin * max(h, w) / max(before.size))
            size = (max(w, round(before.size[0] * scale)), max(h, round(before.size[1] * scale)))
            before = before.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            after = after.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            # The after is kept as RGB whatever the task; the task derives its target from it.
            self.items.append((_u8(before, in_channels), _u8(after, 3), key))
            self.floors.append(pair_floor)
            self.names.append(p.name)

    def __len__(self):
        return len(self.items)

    def batches(self, batch_size: int, rng: random.Random, augment: bool = True):
        """Yield (before (B, C, h, w), after (B, C', h, w)) floats in [0, 1] and floor (B,), one epoch, shuffled."""
        by_key = defaultdict(list)
        for i, (_, _, key) in enumerate(self.items):
            by_key[key].append(i)
        chunks = []
        for idx in by_key.values():
            if augment:
                rng.shuffle(idx)
            chunks += [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
        if augment:
            rng.shuffle(chunks)
        for chunk in chunks:
            yield self._batch(chunk, rng if augment else None)

    def _batch(self, idx: list[int], rng: random.Random | None):
        befores, afters = [], []
        for i in idx:
            b, a, (h, w) = self.items[i]
            if rng is not None:
                b, a = self._augment(b, a, (h, w), rng)
            befores.append(_resize(b, (h, w)))
            afters.append(_resize(a, (h, w)))
        floors = torch.tensor([self.floors[i] for i in idx], dtype=torch.float32)
        return torch.stack(befores), torch.stack(afters), floors

    @staticmethod
    def _augment(b, a, key, rng: random.Random, min_area: float = 0.5):
        """A random crop of at least min_area of the picture, aspect kept within 15%, maybe mirrored."""
        H, W = b.shape[-2:]
        area = rng.uniform(min_area, 1.0)
        ratio = rng.uniform(0.87, 1.15)
        ch = min(H, max(8, round(H * (area / ratio) ** 0.5)))
        cw = min(W, max(8, round(W * (area * ratio) ** 0.5)))
        y0, x0 = rng.randint(0, H - ch), rng.randint(0, W - cw)
        b, a = b[:, y0:y0 + ch, x0:x0 + cw], a[:, y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            b, a = b.flip(-1), a.flip(-1)
        return b, a


def _resize(u8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = u8.float().div_(255.0)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
