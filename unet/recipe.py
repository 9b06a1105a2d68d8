"""The shipped models' recipe: architecture, working size and decoding for each task, and why.

colorize: luminance at 192 px on the long side (a 256x384 plate is seen at
128x192), a five-level U-Net of widths 16-256 whose output is at half the
working size: chroma is smooth, and the 100 class logits of the bins head
cost a quarter there. The fifth level (8x12 at that size) costs almost no
time and gives the network the whole picture. The head is a blend: two
regression channels trained with the psnr loss (see objective.py: safe,
sepia-leaning) and, on a side head that reads the same features without
training them, a 10x10 grid of chroma classes trained with rebalanced
cross-entropy (vivid, hues sometimes wrong). Their mix and two chroma gains
(the tint's and the departures' from it) are calibrated after training on
the run's own held-out pairs (see unet.train.calibrate); on the plates the
calibration keeps the regression alone and raises its colors by gains.

translate: RGB at 128 px on the long side, the same U-Net at full working
size predicting a local affine color transform that is upsampled and applied
to the full-size input, so the output keeps every pixel of the input's detail.
"""

from __future__ import annotations

from .model import UNetConfig
from .tasks import TaskConfig


def recipe(task: str, gray_output: bool = False) -> tuple[TaskConfig, UNetConfig]:
    """(TaskConfig, UNetConfig) for a new network of this task; gray_output: translate to one channel."""
    if task == "colorize":
        return (TaskConfig("colorize", work_long=192, head="blend", bins_per_axis=10, bins_extent=0.32,
                           temperature=0.5),
                UNetConfig(widths=(16, 32, 64, 128, 256), middle_blocks=2, out_stride=2, side_channels=100))
    if task == "translate":
        return (TaskConfig("translate", work_long=128, out_channels=1 if gray_output else 3),
                UNetConfig(widths=(16, 32, 64, 128), middle_blocks=2, out_stride=1))
    raise ValueError(f"unknown task {task!r}; expected colorize or translate")
