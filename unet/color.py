"""Color spaces and chroma bins, as tensors.

The model works in full-range YCbCr (JFIF, the space Pillow's "YCbCr" mode and
its "L" conversion use): luminance Y in [0, 1], chroma Cb/Cr centred on zero in
[-0.5, 0.5]. With Y fixed, an error in Cb/Cr is a linear error in RGB, so a
chroma loss here is close to the RGB PSNR we are judged on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# JFIF / ITU-R BT.601 full range, the coefficients Pillow uses.
_RGB_TO_YCC = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.168736, -0.331264, 0.5],
    [0.5, -0.418688, -0.081312],
])
_YCC_TO_RGB = torch.tensor([
    [1.0, 0.0, 1.402],
    [1.0, -0.344136, -0.714136],
    [1.0, 1.772, 0.0],
])


# Its chroma columns: an error in (Cb, Cr) is this error in RGB, whatever Y is.
CHROMA_TO_RGB = _YCC_TO_RGB[:, 1:]  # (3, 2)


def rgb_to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) Y in [0, 1], Cb/Cr in [-0.5, 0.5]."""
    m = _RGB_TO_YCC.to(rgb.device, rgb.dtype)
    return torch.einsum("ij,bjhw->bihw", m, rgb)


def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_ycc, clamped to [0, 1]."""
    m = _YCC_TO_RGB.to(ycc.device, ycc.dtype)
    return torch.einsum("ij,bjhw->bihw", m, ycc).clamp(0.0, 1.0)


# sRGB (D65) to CIE XYZ, and the white point: the Lab the hue metric (metrics.AbAuc) is measured in.
SRGB_TO_XYZ = torch.tensor([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
])
D65 = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_ab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 2, H, W) CIE Lab a, b (D65), differentiable everywhere."""
    c = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", SRGB_TO_XYZ.to(rgb), c) / D65.to(rgb)[None, :, None, None]
    # The cube root's slope is unbounded at 0: the linear branch below the knee keeps gradients finite.
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0.008856) ** (1 / 3), 7.787 * xyz + 16.0 / 116.0)
    return torch.stack([500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])], dim=1)


class ChromaBins:
    """A square grid of chroma classes over (Cb, Cr) in [-extent, extent]^2.

    Colorization is ambiguous (a gray fish may be red or blue); regressing the
    mean averages the modes into brown. Predicting a distribution over these
    bins and decoding it with an annealed mean keeps the colors (Zhang et al.
    2016), with the temperature trading vividness against error.
    """

    def __init__(self, per_axis: int, extent: float):
        self.per_axis = per_axis
        self.extent = extent
        self.step = 2 * extent / per_axis
        axis = -extent + self.step * (torch.arange(per_axis, dtype=torch.float32) + 0.5)
        cb, cr = torch.meshgrid(axis, axis, indexing="ij")
        self.centers = torch.stack([cb.flatten(), cr.flatten()], dim=1)  # (Q, 2)

    @property
    def count(self) -> int:
        return self.per_axis**2

    def soft_encode(self, chroma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, H, W) chroma -> bilinear weights on the 4 surrounding bins.

        Returns (index (B, 4, H, W) long, weight (B, 4, H, W)) so a loss can
        gather 4 log-probabilities instead of materialising a dense target.
        """
        n = self.per_axis
        # Continuous grid coordinate of each value, clamped inside the grid.
        g = ((chroma + self.extent) / self.step - 0.5).clamp(0, n - 1 - 1e-4)
        lo = g.floor()
        frac = g - lo
        lo = lo.long()
        i0, j0 = lo[:, 0], lo[:, 1]
        fi, fj = frac[:, 0], frac[:, 1]
        index = torch.stack([
            i0 * n + j0, i0 * n + j0 + 1, (i0 + 1) * n + j0, (i0 + 1) * n + j0 + 1,
        ], dim=1)
        weight = torch.stack([
            (1 - fi) * (1 - fj), (1 - fi) * fj, fi * (1 - fj), fi * fj,
        ], dim=1)
        return index, weight

    def decode(self, logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, Q, H, W) logits -> (B, 2, H, W) chroma, the annealed mean at temperature."""
        p = torch.softmax(logits.float() / temperature, dim=1)
        # A 1x1 convolution is the fastest weighted sum over Q on CPU (einsum is ~1.5x slower).
        return F.conv2d(p, self.centers.to(logits.device).t()[:, :, None, None])
