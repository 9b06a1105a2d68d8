"""Predictor: images in, images out, batched on CPU or CUDA.

The three steps are public so a service can run them on different threads:
prepare() and finish() are CPU work on one image (thread-safe), run() is one
forward pass over a batch of prepared images that share a working size.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import Model, load_model
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

    def prepare(self, image: Image.Image | Plain) -> Prepared:
        return self.task.prepare(image if isinstance(image, Plain) else plain(image))

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
            y = self.task.reduce(self.net(x))
        return list(y.float().cpu().unbind(0))

    def finish(self, item: Prepared, y: torch.Tensor, ycc: bool = False, deep: bool = False) -> Image.Image | np.ndarray:
        """One image's result; with ycc, a YCbCr image where the task has one (for a JPEG encoder); with
        deep, a 16-bit input's result as 16-bit samples (for a PNG or TIFF encoder; Task.finish)."""
        return self.task.finish(y, item.ctx, ycc, deep)

    def predict(self, images: list[Image.Image | Plain]) -> list[Image.Image]:
        """Convert a list of images of any sizes and modes, in batches of up to max_batch."""
        prepared = [self.prepare(im) for im in images]
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
