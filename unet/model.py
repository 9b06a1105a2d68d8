"""The U-Net: encoder stages, a middle section, a decoder with skips, built by loops."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1            # 1 for luminance (colorize), 3 for RGB (translate)
    out_channels: int = 2           # what the task's head needs (chroma, bin logits, affine coefficients)
    widths: tuple[int, ...] = (24, 48, 96, 192)  # channels per resolution level; len-1 = number of downsamplings
    middle_blocks: int = 2          # residual blocks at the lowest resolution
    norm: str = "batch"             # batch | group | none
    global_context: bool = True     # add a pooled whole-image vector in the middle (scene-wide color cues)
    out_stride: int = 1             # 1: output at input size; 2: at half size (heads with many channels
                                    # cost a quarter, and smooth outputs such as chroma lose nothing)
    side_channels: int = 0          # the first N outputs come from a side head that reads the features
                                    # without training them (its gradient stops there): an auxiliary
                                    # output that must not pull the network away from the main one

    def __post_init__(self):
        if len(self.widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {self.widths}")
        if self.norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be batch, group or none, got {self.norm!r}")
        if self.out_stride not in (1, 2):
            raise ValueError(f"out_stride must be 1 or 2, got {self.out_stride}")
        if self.side_channels < 0:
            raise ValueError(f"side_channels must be 0 or more, got {self.side_channels}")

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this internally."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvNormAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(channels, channels, norm),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, channels),
        )

    def forward(self, x):
        return F.relu(x + self.body(x))


class GlobalContext(nn.Module):
    """Adds a vector pooled over the whole image to every position.

    At the working size the lowest level already sees most of the image, but a
    pooled vector makes "this whole plate is a reddish fish" cheap to learn.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))

    def forward(self, x):
        g = self.fc(x.mean(dim=(2, 3)))  # (B, C)
        return x + g[:, :, None, None]


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.side_channels >= cfg.out_channels:
            raise ValueError(f"side_channels ({cfg.side_channels}) must leave outputs for the main head "
                             f"(out_channels {cfg.out_channels})")
        w = cfg.widths
        self.down = nn.ModuleList()
        c_prev = cfg.in_channels
        for c in w[:-1]:  # one stage per level above the middle
            self.down.append(nn.Sequential(
                ConvNormAct(c_prev, c, cfg.norm), ConvNormAct(c, c, cfg.norm), ResBlock(c, cfg.norm),
            ))
            c_prev = c
        middle = [ConvNormAct(c_prev, w[-1], cfg.norm)]
        middle += [ResBlock(w[-1], cfg.norm) for _ in range(cfg.middle_blocks)]
        if cfg.global_context:
            middle.append(GlobalContext(w[-1]))
        self.middle = nn.Sequential(*middle)
        self.up = nn.ModuleList()
        # With out_stride 2 the decoder stops one level short of the input size.
        levels = list(zip(reversed(w[:-1]), reversed(w[1:])))[: len(w) - cfg.out_stride]
        for c_skip, c_below in levels:
            self.up.append(nn.Sequential(
                ConvNormAct(c_below + c_skip, c_skip, cfg.norm), ConvNormAct(c_skip, c_skip, cfg.norm),
            ))
        self.head = nn.Conv2d(levels[-1][0], cfg.out_channels - cfg.side_channels, 1)
        self.side = nn.Conv2d(levels[-1][0], cfg.side_channels, 1) if cfg.side_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / out_stride, W / out_stride), any H and W."""
        h, w = x.shape[-2:]
        m = self.cfg.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            # Replicate, not zeros: a black border would leak into edge colors.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.middle(x)
        for stage in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        s = self.cfg.out_stride
        y = self.head(x)
        if self.side is not None:
            y = torch.cat([self.side(x.detach()), y], dim=1)
        return y[..., : -(-h // s), : -(-w // s)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
