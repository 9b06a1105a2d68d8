"""The two tasks: how an image becomes a model input, and a model output an image.

Both tasks run the network at a small working size and carry its answer back
to the input's full size in a way that keeps the input's own detail:

- colorize: the network sees luminance and predicts chroma; the output is the
  input's full-resolution luminance merged with upsampled chroma.
- translate: the network sees RGB and predicts a local affine color transform
  (a 3x4 or 1x4 matrix per pixel, smooth across the image); the transform is
  upsampled and applied to the full-resolution input. Any pixelwise color
  mapping (color to gray as the pairs show it, toning, white balance) keeps
  full sharpness this way, whatever the working size.

A 16-bit input (Plain.deep) is finished at 16 bits when the caller asks for it
(a PNG or TIFF result): its own luminance with the chroma, or the transform
applied in float to its own samples. The network sees the 8-bit copy either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .color import ChromaBins, rgb_to_ycc, ycc_to_rgb
from .images import Plain, luminance, with_alpha

LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class TaskConfig:
    name: str = "colorize"         # colorize | translate
    work_long: int = 192           # long side of the working size, pixels; the short side keeps the aspect
    # colorize
    head: str = "bins"             # bins: class logits over chroma bins | regression: Cb/Cr directly
                                   # | blend: both, mixed by `blend` (safe regression + vivid bins)
    bins_per_axis: int = 16        # chroma grid is bins_per_axis^2 classes
    bins_extent: float = 0.32      # grid covers Cb, Cr in [-extent, extent] (full scale is 0.5)
    temperature: float = 0.5       # annealed-mean decoding: lower is more vivid, higher is safer
    blend: float = 0.5             # blend head: share of the vivid bins decode mixed into the regression
    gain: float = 1.0              # the decoded chroma's departures from the image's mean chroma are
                                   # multiplied by this: > 1 undoes some of the regression's pull toward
                                   # a flat color (calibrated after training)
    tint_gain: float | None = None # ... and the image's mean chroma (its overall tint) by this; None: by
                                   # gain too, so the whole chroma is scaled (models before this knob)
    # translate
    out_channels: int = 3          # 1: gray output, 3: RGB output

    def __post_init__(self):
        if self.name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; expected one of {sorted(TASKS)}")
        if self.work_long < 16:
            raise ValueError(f"work_long must be at least 16 pixels, got {self.work_long}")
        if self.head not in ("bins", "regression", "blend"):
            raise ValueError(f"head must be bins, regression or blend, got {self.head!r}")
        if not 0 <= self.blend <= 1:
            raise ValueError(f"blend must be within 0..1, got {self.blend}")
        for knob in ("gain", "tint_gain"):
            value = getattr(self, knob)
            if value is not None and not 0 < value <= 3:
                raise ValueError(f"{knob} must be within (0, 3], got {value}")
        if self.out_channels not in (1, 3):
            raise ValueError(f"out_channels must be 1 or 3, got {self.out_channels}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TaskConfig":
        return cls(**d)


def work_shape(width: int, height: int, work_long: int, multiple: int) -> tuple[int, int]:
    """The (h, w) the network sees for an image: long side work_long, aspect kept, sides a multiple."""
    scale = work_long / max(width, height)

    def side(n):
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(height), side(width)


@dataclass
class Prepared:
    """One image ready for the network; key groups images that can share a batch."""

    x: torch.Tensor          # (C, h, w) float32 network input
    key: tuple[int, int]     # (h, w): the working-size bucket
    ctx: Any                 # what finish() needs: the full-size image, alpha
    hints: Any = None        # a colorize picture's color points (hints.Hints), spread by guide.py


class Task:
    """Shared plumbing; subclasses define the channels and the two conversions."""

    name: str
    in_channels: int
    out_channels: int
    side_channels: int = 0   # leading outputs that may come from a side head (see UNetConfig)

    def __init__(self, cfg: TaskConfig, multiple: int):
        self.cfg = cfg
        self.multiple = multiple

    def shape_for(self, size: tuple[int, int]) -> tuple[int, int]:
        return work_shape(size[0], size[1], self.cfg.work_long, self.multiple)

    def _resize(self, im: Image.Image, key: tuple[int, int]) -> Image.Image:
        h, w = key
        return im.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)

    def prepare(self, p: Plain) -> Prepared:
        raise NotImplementedError

    def reduce(self, y: torch.Tensor) -> torch.Tensor:
        """(B, out, h, w) network output -> what finish() takes, computed on the network's device."""
        return y

    def finish(self, y: torch.Tensor, ctx, ycc: bool = False, deep: bool = False) -> Image.Image | np.ndarray:
        """What reduce() gave for one image -> the full-size result. With ycc the caller (a JPEG
        encoder) also takes a YCbCr image, which spares a task that works in YCbCr a conversion. With
        deep (a PNG or TIFF encoder) a 16-bit input gives a 16-bit result: (H, W) or (H, W, 3) uint16."""
        raise NotImplementedError


def _to_float(im: Image.Image) -> torch.Tensor:
    """L or RGB image -> (C, H, W) float32 in [0, 1]."""
    a = torch.from_numpy(np.array(im, dtype=np.uint8))
    a = a[None] if a.ndim == 2 else a.permute(2, 0, 1)
    return a.float().div_(255.0)


class Colorize(Task):
    name = "colorize"
    in_channels = 1

    def __init__(self, cfg: TaskConfig, multiple: int):
        super().__init__(cfg, multiple)
        self.bins = ChromaBins(cfg.bins_per_axis, cfg.bins_extent)
        self.out_channels = {"bins": self.bins.count, "regression": 2, "blend": self.bins.count + 2}[cfg.head]
        self.side_channels = self.bins.count if cfg.head == "blend" else 0  # the vivid logits beside the regression

    def prepare(self, p: Plain) -> Prepared:
        gray = luminance(p.image)
        key = self.shape_for(gray.size)
        x = _to_float(self._resize(gray, key)).sub_(0.5).div_(0.25)
        return Prepared(x, key, (gray, p.alpha, p.deep))

    def chroma(self, y: torch.Tensor, temperature: float | None = None, blend: float | None = None,
               gain: float | None = None, tint_gain: float | None = None) -> torch.Tensor:
        """(B, out, h, w) network output -> (B, 2, h, w) Cb/Cr; the keywords override the config's knobs."""
        t = temperature or self.cfg.temperature
        g = self.cfg.gain if gain is None else gain
        if tint_gain is None:  # a gain given alone scales the whole chroma, as before tint_gain existed
            tint_gain = self.cfg.tint_gain if gain is None else None
        tg = g if tint_gain is None else tint_gain
        if self.cfg.head == "regression":
            c = self.regression(y)
        elif self.cfg.head == "bins":
            c = self.bins.decode(y, t)
        else:
            a = self.cfg.blend if blend is None else blend
            c = self.regression(y)
            if a:
                c = c + a * (self.bins.decode(y[:, :-2], t) - c)
        return vivid(c, g, tg)

    def regression(self, y: torch.Tensor) -> torch.Tensor:
        """The regression channels (the last two) as Cb/Cr."""
        return 0.5 * torch.tanh(y[:, -2:].float())

    def reduce(self, y: torch.Tensor) -> torch.Tensor:
        # Decoding the bins where the network ran: 2 channels cross to the CPU instead of ~100.
        return self.chroma(y)

    def probabilities(self, y: torch.Tensor) -> torch.Tensor | None:
        """(B, out, h, w) network output -> (B, Q, h, w) chroma-bin probabilities; None for a regression head."""
        if self.cfg.head == "regression":
            return None
        return torch.softmax((y if self.cfg.head == "bins" else y[:, :-2]).float(), dim=1)

    def finish(self, c: torch.Tensor, ctx, ycc: bool = False, deep: bool = False) -> Image.Image | np.ndarray:
        """Reduced output (2, h, w) chroma -> full-size RGB: the input's luminance, bicubic-upsampled chroma.

        With ycc (and no alpha to keep) the YCbCr image itself, for a JPEG
        encoder: it stores YCbCr with chroma at half resolution (4:2:0), so
        the chroma goes bicubic to half size and then into 2x2 blocks, which
        the encoder averages back to exactly those values. Both RGB
        conversions are spared, and the input's luminance is written as it is,
        not through clipped RGB. Finishing and encoding a 12 MP picture take
        60 ms instead of 140 this way on two CPU cores.

        With deep and a 16-bit input, (H, W, 3) uint16 RGB from the input's
        own 16-bit luminance (see _colorize_deep).
        """
        gray, alpha, *deep_samples = ctx   # (gray, alpha) from a caller that has no 16-bit input
        samples = deep_samples[0] if deep_samples else None
        if deep and samples is not None:
            return _colorize_deep(c.float(), samples)
        c = (c.float() * 255.0 + 128.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
        planes = [Image.fromarray(ch, "L") for ch in c]
        if ycc and alpha is None:
            half = ((gray.width + 1) // 2, (gray.height + 1) // 2)
            cb, cr = (p.resize(half, Image.Resampling.BICUBIC).resize(gray.size, Image.Resampling.NEAREST)
                      for p in planes)
            return Image.merge("YCbCr", (gray, cb, cr))
        cb, cr = (p.resize(gray.size, Image.Resampling.BICUBIC) for p in planes)
        return with_alpha(Image.merge("YCbCr", (gray, cb, cr)).convert("RGB"), alpha)

    def target(self, after: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB truth -> (B, 2, h, w) chroma truth."""
        return rgb_to_ycc(after)[:, 1:]

    def as_input(self, before: torch.Tensor) -> torch.Tensor:
        """(B, 1|3, h, w) before image in [0, 1] -> network input."""
        if before.shape[1] == 3:
            before = rgb_to_ycc(before)[:, :1]
        return (before - 0.5) / 0.25


def _colorize_deep(c: torch.Tensor, samples: np.ndarray, strip_pixels: int = 1 << 19) -> np.ndarray:
    """(2, h, w) chroma + (H, W) or (H, W, 3) uint16 input -> (H, W, 3) uint16 RGB with the input's luminance.

    The chroma is upsampled bicubic in float (Pillow's "F" mode, not through
    8 bits as the 8-bit result's is), a strip of rows at a time: a strip
    resized from its box of the small plane is exactly those rows of the whole
    plane resized, so only strips and the result are ever full width. A strip
    is about strip_pixels, whatever the width: its float copies take some 40
    bytes a pixel (25 MB), where 512 rows of a 4000-wide scan took 100.
    """
    H, W = samples.shape[:2]
    rows_per_strip = max(1, strip_pixels // max(1, W))
    planes = [Image.fromarray(ch.numpy(), "F") for ch in c]
    h, w = c.shape[-2:]
    out = np.empty((H, W, 3), dtype=np.uint16)
    for r0 in range(0, H, rows_per_strip):
        r1 = min(H, r0 + rows_per_strip)
        box = (0, r0 * h / H, w, r1 * h / H)
        cb, cr = (np.asarray(p.resize((W, r1 - r0), Image.Resampling.BICUBIC, box=box)) for p in planes)
        y = samples[r0:r1].astype(np.float32)
        y = (y if y.ndim == 2 else y @ np.asarray(LUMA, dtype=np.float32)) / 65535.0
        ycc = torch.from_numpy(np.stack([y, cb, cr]))[None]            # (1, 3, rows, W)
        rgb = ycc_to_rgb(ycc)[0].mul_(65535.0).round_()                 # clamped to [0, 1] before
        out[r0:r1] = rgb.permute(1, 2, 0).numpy()
    return out


def vivid(c: torch.Tensor, gain: float, tint_gain: float) -> torch.Tensor:
    """(B, 2, h, w) chroma -> each image's mean chroma times tint_gain plus its departures times gain.

    Regression pulls a prediction toward the average of the colors a place
    could have. It pulls the local colors (this petal red, that leaf green)
    much harder than the overall tint, which the whole picture gives away
    (a plate's paper, a photo's cast), so the two get gains of their own.
    """
    if gain == 1 and tint_gain == 1:
        return c
    mean = c.mean(dim=(2, 3), keepdim=True)
    return (mean * tint_gain + (c - mean) * gain).clamp_(-0.5, 0.5)


class Translate(Task):
    name = "translate"
    in_channels = 3

    def __init__(self, cfg: TaskConfig, multiple: int):
        super().__init__(cfg, multiple)
        self.out_channels = cfg.out_channels * 4  # a row of 3 weights and a bias per output channel
        base = torch.eye(3) if cfg.out_channels == 3 else torch.tensor([LUMA])
        # The identity (or luma) transform the network's output is added to, so
        # an untrained head already gives a sensible image.
        self.base = torch.cat([base, torch.zeros(cfg.out_channels, 1)], dim=1)  # (out, 4)

    def prepare(self, p: Plain) -> Prepared:
        rgb = p.image.convert("RGB")
        key = self.shape_for(rgb.size)
        x = _to_float(self._resize(rgb, key))
        return Prepared(x.sub(0.5).div_(0.25), key, (rgb, p.alpha, p.deep))

    def as_input(self, before: torch.Tensor) -> torch.Tensor:
        if before.shape[1] == 1:
            before = before.expand(-1, 3, -1, -1)
        return (before - 0.5) / 0.25

    def coefficients(self, y: torch.Tensor) -> torch.Tensor:
        """(B, out*4, h, w) -> (B, out, 4, h, w) affine coefficients."""
        b, _, h, w = y.shape
        return y.float().view(b, self.cfg.out_channels, 4, h, w) + self.base.to(y.device)[None, :, :, None, None]

    def apply(self, y: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """Apply coefficients (B, out*4, h, w) to RGB (B, 3, H, W) in [0, 1]; upsampled when H, W differ."""
        coef = self.coefficients(y)
        b, o, _, h, w = coef.shape
        if rgb.shape[-2:] != (h, w):
            coef = F.interpolate(coef.flatten(1, 2), size=rgb.shape[-2:], mode="bilinear",
                                 align_corners=False).view(b, o, 4, *rgb.shape[-2:])
        return (coef[:, :, :3] * rgb[:, None]).sum(2) + coef[:, :, 3]

    def finish(self, y: torch.Tensor, ctx, ycc: bool = False, deep: bool = False,
               rows_per_strip: int = 512) -> Image.Image | np.ndarray:
        """Apply the upsampled transform to the full-size input, a strip of rows at a time (RGB or gray
        whatever ycc says: there is no YCbCr image to spare a conversion of).

        The coefficients are upsampled bilinearly (half-pixel centers, edges
        held, as F.interpolate does) in two passes: along the rows once for
        the whole image, then each strip's rows as a blend of two of those.
        With deep and a 16-bit input, the input's own samples go through the
        same float arithmetic into a uint16 result, (H, W) gray or (H, W, 3).
        """
        rgb, alpha, samples = ctx
        W, H = rgb.size
        deep = deep and samples is not None
        full = samples if deep else np.asarray(rgb)   # (H, W) for a gray 16-bit input
        peak = 65535.0 if deep else 255.0
        out = np.empty((H, W, self.cfg.out_channels), dtype=np.uint16 if deep else np.uint8)
        coef = self.coefficients(y[None])[0].flatten(0, 1)  # (out*4, h, w)
        h, w = coef.shape[-2:]
        x0, x1, tx = _taps(w, W)
        wide = torch.lerp(coef.index_select(2, x0), coef.index_select(2, x1), tx)  # (out*4, h, W)
        y0, y1, ty = _taps(h, H)
        for r0 in range(0, H, rows_per_strip):
            r1 = min(H, r0 + rows_per_strip)
            rows = slice(r0, r1)
            c = torch.lerp(wide.index_select(1, y0[rows]), wide.index_select(1, y1[rows]), ty[rows, None])
            c = c.view(self.cfg.out_channels, 4, r1 - r0, W)
            px = torch.from_numpy(full[rows].astype(np.float32)).div_(peak)
            px = px.permute(2, 0, 1) if px.ndim == 3 else px.expand(3, -1, -1)  # (3, rows, W)
            o = c[:, 3].addcmul(c[:, 0], px[0]).addcmul_(c[:, 1], px[1]).addcmul_(c[:, 2], px[2])
            out[rows] = (o * peak).round_().clamp_(0, peak).permute(1, 2, 0).numpy()
        if deep:
            return out[..., 0] if self.cfg.out_channels == 1 else out
        mode = "L" if self.cfg.out_channels == 1 else "RGB"
        return with_alpha(Image.fromarray(out[..., 0] if mode == "L" else out, mode), alpha)

    def target(self, after: torch.Tensor) -> torch.Tensor:
        if self.cfg.out_channels == 1 and after.shape[1] == 3:
            return rgb_to_ycc(after)[:, :1]
        if self.cfg.out_channels == 3 and after.shape[1] == 1:
            return after.expand(-1, 3, -1, -1)
        return after


def _taps(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear upsampling of n samples to size: the two source indices and the weight of the second."""
    pos = ((torch.arange(size, dtype=torch.float32) + 0.5) * (n / size) - 0.5).clamp_(0, n - 1)
    i0 = pos.floor().long()
    return i0, (i0 + 1).clamp_(max=n - 1), pos - i0


TASKS = {"colorize": Colorize, "translate": Translate}


def make_task(cfg: TaskConfig, multiple: int) -> Task:
    return TASKS[cfg.name](cfg, multiple)
