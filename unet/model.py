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
    encoder: str = "none"           # none: the encoder stages above | efficientnet-lite0: an ImageNet-
                                    # pretrained encoder (see encoder.py) whose five feature maps, strides
                                    # 2 to 32, are the skips; widths are then the decoder's channels at
                                    # strides 1, 2, 4, 8, 16 (exactly 5; the first unused with out_stride 2)

    def __post_init__(self):
        if len(self.widths) < 2:
            raise ValueError(f"widths needs at least 2 levels, got {self.widths}")
        if self.norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be batch, group or none, got {self.norm!r}")
        if self.out_stride not in (1, 2):
            raise ValueError(f"out_stride must be 1 or 2, got {self.out_stride}")
        if self.side_channels < 0:
            raise ValueError(f"side_channels must be 0 or more, got {self.side_channels}")
        if self.encoder != "none":
            from .encoder import ENCODERS
            if self.encoder not in ENCODERS:
                raise ValueError(f"encoder must be none or one of {sorted(ENCODERS)}, got {self.encoder!r}")
            if len(self.widths) != 5:
                raise ValueError(f"with an encoder, widths are the decoder's channels at strides 1 to 16: "
                                 f"give 5, got {self.widths}")

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this internally."""
        return 32 if self.encoder != "none" else 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d.setdefault("encoder", "none")   # models from before the knob
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
        if cfg.encoder != "none":
            self._build_pretrained(cfg)
            return
        self.encoder = None
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

    def _build_pretrained(self, cfg: UNetConfig):
        """A decoder over a pretrained encoder's feature maps: from stride 32 up to the output's stride."""
        from .encoder import EfficientNetLite

        if cfg.in_channels != 1:
            raise ValueError(f"encoder {cfg.encoder!r} takes luminance (in_channels 1), got {cfg.in_channels}")
        self.encoder = EfficientNetLite(cfg.encoder)
        c_deep = self.encoder.channels[-1]
        middle = [ResBlock(c_deep, cfg.norm) for _ in range(cfg.middle_blocks)]
        if cfg.global_context:
            middle.append(GlobalContext(c_deep))
        self.middle = nn.Sequential(*middle)
        # Level i is stride 2^i: its skip is the encoder's map there (the input itself at level 0).
        skips = (cfg.in_channels, *self.encoder.channels[:-1])
        self.up = nn.ModuleList()
        c_below = c_deep
        for level in reversed(range(cfg.out_stride - 1, 5)):
            c = cfg.widths[level]
            self.up.append(nn.Sequential(ConvNormAct(c_below + skips[level], c, cfg.norm), ConvNormAct(c, c, cfg.norm)))
            c_below = c
        self.head = nn.Conv2d(c_below, cfg.out_channels - cfg.side_channels, 1)
        self.side = nn.Conv2d(c_below, cfg.side_channels, 1) if cfg.side_channels else None

    def decoder_parameters(self):
        """Every parameter but the pretrained encoder's (all of them without one)."""
        enc = {id(p) for p in self.encoder.parameters()} if self.encoder is not None else set()
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, H / out_stride, W / out_stride), any H and W."""
        h, w = x.shape[-2:]
        m = self.cfg.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            # Replicate, not zeros: a black border would leak into edge colors.
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.encoder is not None:
            skips = [x, *self.encoder(x)]          # (B, C_i, H / 2^i, W / 2^i), i = 0 .. 5
            x = self.middle(skips.pop())
            skips = skips[self.cfg.out_stride - 1:]   # the levels the decoder reaches
        else:
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
