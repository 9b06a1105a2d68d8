"""The shipped models' recipe: architecture, working size and decoding for each task, and why.

colorize: luminance at 192 px on the long side (a 256x384 plate is seen at
128x192) through an ImageNet-pretrained EfficientNet-Lite0 encoder, whose
five stages (strides 2 to 32) feed a small U-Net decoder of widths 16-96;
the output is at half the working size: chroma is smooth. Hue is knowledge
of what things are, which a few hundred plates cannot teach and ImageNet
can (docs/models.md has the runs). The head is a blend: two regression
channels trained with the psnr loss (see objective.py: safe, sepia-leaning)
and, from the same features and trained with them, a 10x10 grid of chroma
classes trained with rebalanced cross-entropy (TrainConfig.blend_ce_weight). The
classes teach the shared features which hue a thing has even where the
regression alone would settle on brown; their mix into the output and two
chroma gains are calibrated after training on the run's own held-out pairs
(see unet.calibration), to reach TrainConfig.vividness of the truth's
colorfulness at the best PSNR.

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
                UNetConfig(encoder="efficientnet-lite0", widths=(16, 32, 48, 64, 96), middle_blocks=0,
                           out_stride=2))
    if task == "translate":
        return (TaskConfig("translate", work_long=128, out_channels=1 if gray_output else 3),
                UNetConfig(widths=(16, 32, 64, 128), middle_blocks=2, out_stride=1))
    raise ValueError(f"unknown task {task!r}; expected colorize or translate")
