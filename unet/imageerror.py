"""The error an input that cannot be used raises (unet.images and unet.deepread), and the size check
made from a header before any pixel is decoded."""

from __future__ import annotations


class ImageError(ValueError):
    """An input that cannot be used, with a message a user can act on."""


def check_size(size: tuple[int, int], max_pixels: int | None) -> None:
    """ImageError when width x height is over max_pixels (None: no limit)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f}; raise limits.max_pixels if this image is wanted"
        )
