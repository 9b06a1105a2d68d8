"""Predictor: images in, images out, batched on CPU or CUDA.

The three steps are public so a service can run them on different threads:
prepare() and finish() are CPU work on one image (thread-safe), run() is one
forward pass over a batch of prepared images that share a working size.

A colorize picture prepared with hints (color points, hints.py) is finished
by spreading them over the automatic result (guide.py); one prepared without
is finished exactly as before, whatever else is in its batch.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import Model, load_model
from .guide import Guide
from .hints import HintError, Hints
from .images import Plain, plain
from .tasks import Prepared


def pick_device(name: str = "auto") -> torch.device:
    """auto -> the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'")
    return dev


class Predictor:
    def __init__(self, model: Model | str | Path, device: str | torch.device = "auto", max_batch: int = 8):
        self.model = model if isinstance(model, Model) else load_model(model)
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.max_batch = max_batch
        self.net = self.model.net.to(self.device).eval()
        self.task = self.model.task
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            # Convolutions on tensor cores like NHWC; on this CPU build it was no faster.
            self.net = self.net.to(memory_format=torch.channels_last)
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @property
    def version(self):
        return self.model.version

    def prepare(self, image: Image.Image | Plain, hints: Hints | None = None) -> Prepared:
        """One image ready for run(); hints (color points) are for a colorize model, and a HintError otherwise."""
        item = self.task.prepare(image if isinstance(image, Plain) else plain(image))
        if hints is not None:
            if self.task.name != "colorize":
                raise HintError(f"color points are for colorizing; this model does {self.task.name}")
            item.hints = hints
        return item

    @torch.inference_mode()
    def run(self, items: list[Prepared]) -> list[torch.Tensor]:
        """One forward pass over items of one working size; outputs (reduced by the task) on the CPU, float32."""
        keys = {p.key for p in items}
        if len(keys) != 1:
            raise ValueError(f"run() takes items of one working size, got {sorted(keys)}")
        x = torch.stack([p.x for p in items])
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast("cuda", dtype=self.amp_dtype)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            raw = self.net(x)
            y = self.task.reduce(raw)
        out = list(y.float().cpu().unbind(0))
        hinted = [i for i, p in enumerate(items) if p.hints is not None]
        if hinted:  # what the network saw travels with the chroma of a picture that has points
            probs = self.task.probabilities(raw[hinted])
            for j, i in enumerate(hinted):
                out[i] = (out[i], None if probs is None else probs[j].float().cpu())
        return out

    def finish(self, item: Prepared, y: torch.Tensor, ycc: bool = False, deep: bool = False) -> Image.Image | np.ndarray:
        """One image's result; with ycc, a YCbCr image where the task has one (for a JPEG encoder); with
        deep, a 16-bit input's result as 16-bit samples (for a PNG or TIFF encoder; Task.finish)."""
        if item.hints is not None:
            y = torch.from_numpy(self.guide(item, y).solve(item.hints)) if item.hints else y[0]
        return self.task.finish(y, item.ctx, ycc, deep)

    def guide(self, item: Prepared, y) -> Guide:
        """The propagation of a prepared picture whose run() output came with what the network saw."""
        chroma, probs = y
        gray = (item.x[0].double() * 0.25 + 0.5).numpy()   # the working-size gray, as Colorize.prepare made it
        return Guide.build(gray, chroma.numpy(), probs)

    def guide_for(self, image: Image.Image | Plain) -> Guide:
        """One colorize picture's Guide, for a live view: Guide.solve(hints, live=True) then Guide.picture."""
        item = self.prepare(image, Hints())
        return self.guide(item, self.run([item])[0])

    def predict(self, images: list[Image.Image | Plain], hints: list[Hints | None] | None = None) -> list[Image.Image]:
        """Convert a list of images of any sizes and modes, in batches of up to max_batch; hints, one per image."""
        hints = hints or [None] * len(images)
        prepared = [self.prepare(im, h) for im, h in zip(images, hints, strict=True)]
        by_key = defaultdict(list)
        for i, p in enumerate(prepared):
            by_key[p.key].append(i)
        out: list[Image.Image | None] = [None] * len(images)
        for idx in by_key.values():
            for s in range(0, len(idx), self.max_batch):
                chunk = idx[s:s + self.max_batch]
                for i, y in zip(chunk, self.run([prepared[i] for i in chunk])):
                    out[i] = self.finish(prepared[i], y)
        return out
