"""What training minimises for each task, and the working-size picture it is judged on.

The colorize task is judged on the mean over images of full-size RGB PSNR.
Its `psnr` loss is that, at working size: per image, the log of the RGB
error plus the error that image has at full size whatever the network
predicts (its floor, measured once per pair when it is loaded), averaged
over images. A plain mean squared error is dominated by the few vivid
pictures whose hues cannot be guessed, where PSNR is low and hardly moves;
the log gives every picture the weight the mean PSNR gives it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import CHROMA_TO_RGB, rgb_to_ab, rgb_to_ycc, ycc_to_rgb
from .images import luminance
from .tasks import Task

MIN_FLOOR = 1e-5   # (0.8 of a level)^2: a pair whose halves agree exactly still has rounding


class Objective:
    """The loss and the working-size rendering for one task's training."""

    def __init__(self, task: Task, train_set, cfg):
        self.task = task
        self.cfg = cfg   # a TrainConfig
        self.weights = None
        if task.name == "colorize" and task.cfg.head != "regression":
            self.weights = self._class_weights(train_set, cfg.rebalance)

    def _class_weights(self, data, r: float) -> torch.Tensor:
        bins = self.task.bins
        counts = torch.zeros(bins.count)
        for _, after, key in data.items:
            t = self.task.target(after[None].float() / 255.0)
            idx, w = bins.soft_encode(t)
            counts.index_add_(0, idx.flatten(), w.flatten())
        p = counts / counts.sum().clamp(min=1)
        w = 1.0 / ((1 - r) * p + r / bins.count)
        return w / (p * w).sum()  # expected weight 1 under the data's own distribution

    def loss(self, y: torch.Tensor, before: torch.Tensor, after: torch.Tensor,
             floor: torch.Tensor | None = None) -> torch.Tensor:
        """A scalar loss for network output y on a batch; floor (B,): each pair's error floor."""
        task = self.task
        if task.name == "translate":
            rgb = before if before.shape[1] == 3 else before.expand(-1, 3, -1, -1)
            return F.l1_loss(task.apply(y, rgb), task.target(after))
        target = _fit(task.target(after), y)
        head = task.cfg.head
        if head == "regression":
            return self._regression(y, target, floor, before)
        logits = y[:, :-2] if head == "blend" else y
        idx, w = task.bins.soft_encode(target)
        logp = F.log_softmax(logits.float(), dim=1)
        ce = -(logp.gather(1, idx) * w).sum(1)                       # (B, h, w)
        rw = (self.weights[idx] * w).sum(1)                          # per-pixel rebalancing
        weight = self.cfg.blend_ce_weight if head == "blend" else self.cfg.ce_weight
        loss = weight * (rw * ce).mean()
        if head == "blend":
            return loss + self._regression(y, target, floor, before)
        if self.cfg.mean_loss:
            loss = loss + self.cfg.mean_loss * 10 * F.l1_loss(task.bins.decode(y, 1.0), target)
        return loss

    def _regression(self, y, target, floor, before):
        pred = self.task.regression(y)
        kind = self.cfg.regression_loss
        if kind == "ab":
            # The distance in Lab ab, where the hue metric (metrics.AbAuc) measures: its mean is the L1
            # of the ab vector, whose minimiser is a median, not the brown mean of the plausible colors.
            luma = _fit(before if before.shape[1] == 1 else rgb_to_ycc(before)[:, :1], y)
            ab = [rgb_to_ab(ycc_to_rgb(torch.cat([luma, c], dim=1))) for c in (pred, target)]
            return (ab[0] - ab[1]).pow(2).sum(1).add(1e-4).sqrt().mean() / 10
        if kind == "psnr":
            err = torch.einsum("ij,bjhw->bihw", CHROMA_TO_RGB.to(pred.device), pred - target)  # (B, 3, h, w)
            mse = err.pow(2).flatten(1).mean(1)                                                 # (B,)
            floor = torch.full_like(mse, MIN_FLOOR) if floor is None else floor.to(mse).clamp(min=MIN_FLOOR)
            return torch.log(mse + floor).mean()
        if kind == "mse":  # the mean over pixels: dominated by the most colorful pictures
            return F.mse_loss(pred, target) * 100
        # Smooth L1 with a small beta: close to L1 (the median, a little less sepia than the mean).
        return F.smooth_l1_loss(pred, target, beta=0.02) * 10

    def render(self, y: torch.Tensor, before: torch.Tensor, knob: dict | None = None,
               chroma: torch.Tensor | None = None) -> torch.Tensor:
        """Network output -> (B, C, h, w) result at working size in [0, 1]; chroma: y decoded already."""
        task = self.task
        if task.name == "translate":
            rgb = before if before.shape[1] == 3 else before.expand(-1, 3, -1, -1)
            return task.apply(y, rgb).clamp(0, 1)
        luma = before if before.shape[1] == 1 else rgb_to_ycc(before)[:, :1]
        chroma = F.interpolate(task.chroma(y, **(knob or {})) if chroma is None else chroma,
                               size=luma.shape[-2:], mode="bilinear", align_corners=False)
        return ycc_to_rgb(torch.cat([luma, chroma], dim=1))


def error_floor(task: Task, out_stride: int):
    """(before, after) full-size images -> the RGB mean squared error (on 0..1) a colorized result keeps.

    Added to a working-size error it gives about the full-size error: the
    psnr loss and the working-size scores (model choice, calibration) use it.

    It is the error of the best result the network could give: the truth's
    own chroma brought down to the network's output size and finished like
    a prediction (upsampled, merged with the input's luminance). What is
    left is the input's luminance against the truth's (two JPEG encodings
    of one picture differ by a few levels) and chroma finer than the output.
    """
    def floor(before: Image.Image, after: Image.Image) -> float:
        h, w = task.shape_for(before.size)
        size = (-(-w // out_stride), -(-h // out_stride))
        _, cb, cr = after.convert("YCbCr").split()
        small = np.stack([np.asarray(ch.resize(size, Image.Resampling.BOX), dtype=np.float32) for ch in (cb, cr)])
        best = task.finish(torch.from_numpy(small).sub_(128.0).div_(255.0), (luminance(before), None))
        truth = after if after.mode == "RGB" else after.convert("RGB")
        diff = np.asarray(best, dtype=np.int16) - np.asarray(truth, dtype=np.int16)  # exact, and twice as fast
        return float(np.square(diff, dtype=np.int32).sum(dtype=np.int64)) / diff.size / 255.0**2
    return floor


def _fit(target: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Area-downsample a target to the network output's size (out_stride 2)."""
    if target.shape[-2:] == y.shape[-2:]:
        return target
    return F.interpolate(target, size=y.shape[-2:], mode="area")
