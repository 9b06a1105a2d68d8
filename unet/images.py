"""Reading images of any common kind into the few modes the model knows.

Scanners and cameras hand us L, LA, RGB, RGBA, P, 1, I;16, I, F and CMYK in
JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF and AVIF, often EXIF-rotated. Everything is reduced
to 8-bit "L" or "RGB" plus an optional alpha band kept aside, so outputs can
carry the input's transparency and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps

# HEIC/HEIF (phones scan prints as HEIC) is read through pillow-heif, whose wheels carry libheif;
# AVIF is Pillow's own (its wheels carry libavif).
pillow_heif.register_heif_opener()

# We check the pixel count ourselves before decoding (open() reads only the
# header), so Pillow's own bomb guard, which warns then raises at 2x its limit,
# would only get in the way of a configured, larger limit.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input that cannot be used, with a message a user can act on."""


@dataclass
class Plain:
    """An image reduced to 8-bit L or RGB, with its alpha band kept aside."""

    image: Image.Image          # mode "L" or "RGB", upright
    alpha: Image.Image | None   # mode "L", same size, or None
    source_mode: str            # the mode the file had, for messages and tests
    format: str | None = None   # the file's format as Pillow names it (JPEG, PNG, ...)
    icc_profile: bytes | None = None  # the file's embedded color profile, if any
    exif: bytes | None = None   # the file's EXIF, orientation reset (the image is upright now)


def open_image(path: str | Path, max_pixels: int | None = None) -> Plain:
    """Open, check the size before decoding, decode fully and normalise one image file."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(
                    f"{w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
                    f"{max_pixels / 1e6:.1f}; raise limits.max_pixels if this image is wanted"
                )
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animated GIF/WebP/TIFF: the first frame
            im.load()
            return plain(im)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image: {e}") from e


def plain(im: Image.Image) -> Plain:
    """Normalise an already opened image (see module docstring)."""
    source_mode, fmt, icc = im.mode, im.format, im.info.get("icc_profile")
    im = ImageOps.exif_transpose(im)  # a new image whose EXIF no longer carries the rotation
    try:
        ex = im.getexif()
        exif = ex.tobytes() if ex else None
    except Exception:  # a broken EXIF block must not cost the image
        exif = None
    alpha = None
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        alpha = im.getchannel("A")
        im = im.convert("L" if im.mode in ("LA", "La") else "RGB")
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode.startswith("I") or im.mode == "F":
        im = _high_depth_to_l(im)
    elif im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    if alpha is not None and alpha.getextrema() == (255, 255):
        alpha = None  # fully opaque: no need to carry it
    return Plain(im, alpha, source_mode, fmt, icc, exif)


def _high_depth_to_l(im: Image.Image, block: int = 1 << 21) -> Image.Image:
    """16/32-bit integer or float gray -> 8-bit L, scaled, not clipped.

    A block of rows at a time (about `block` samples): done whole, a 100 MP
    16-bit TIFF took 2.8 GB in float64 copies for a 100 MB result.
    """
    w, h = im.size
    hi = float(im.getextrema()[1]) if w and h else 0.0
    out = np.empty((h, w), dtype=np.uint8)
    step = max(1, block // max(1, w))
    for r in range(0, h, step):
        a = np.asarray(im.crop((0, r, w, min(h, r + step)))).astype(np.float64)
        if im.mode == "F" and hi <= 1.0:
            a *= 255.0
        elif im.mode.startswith("I;16") or hi > 255:
            a /= 257.0  # 16-bit range: 65535 -> 255
        out[r:r + step] = np.clip(np.rint(a, out=a), 0, 255, out=a)
    return Image.fromarray(out, "L")


def luminance(im: Image.Image) -> Image.Image:
    """The 8-bit luminance of an L or RGB image (Pillow's BT.601 weights)."""
    return im if im.mode == "L" else im.convert("L")


def with_alpha(im: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """Re-attach an alpha band kept aside by plain()."""
    if alpha is None:
        return im
    out = im.convert("LA" if im.mode == "L" else "RGBA")
    out.putalpha(alpha)
    return out


def to_tensor_u8(im: Image.Image) -> np.ndarray:
    """L or RGB image -> (C, H, W) uint8 array."""
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
