"""Reading images of any common kind into the few modes the model knows.

Scanners and cameras hand us L, LA, RGB, RGBA, P, 1, I;16, I, F and CMYK in
JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF and AVIF, often EXIF-rotated. Everything is reduced
to 8-bit "L" or "RGB" plus an optional alpha band kept aside, so outputs can
carry the input's transparency and orientation.

A 16-bit input also keeps its own samples (Plain.deep, and Plain.deep_alpha
for its transparency), so a task can finish its result at full depth while the
network works on the 8-bit copy: 16-bit gray (Pillow's I;16 modes, or I within
16 bits) here, and what Pillow reads at 8 bits only (16-bit color and alpha
PNG and TIFF) or not at all (JPEG 2000 TIFF, say) through deepread.py. A
multi-page TIFF's pages are listed once by tiffchain.py (Plain.pages, open_image's page).
has_color() tells a color picture from a gray or toned one saved as RGB (a
colorize queue asks it of each input).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .deepread import is_png16, png16, tiff16, tiff_alone
from .imageerror import ImageError, check_size  # noqa: F401 (ImageError: unet.images is where callers find it)
from .tiffchain import FromPage, is_tiff_source, page_offsets

# HEIC/HEIF (phones scan prints as HEIC) is read through pillow-heif, whose wheels carry libheif;
# AVIF is Pillow's own (its wheels carry libavif).
pillow_heif.register_heif_opener()

# We check the pixel count ourselves before decoding (open() reads only the
# header), so Pillow's own bomb guard, which warns then raises at 2x its limit,
# would only get in the way of a configured, larger limit.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class Plain:
    """An image reduced to 8-bit L or RGB, with its alpha band kept aside."""

    image: Image.Image          # mode "L" or "RGB", upright
    alpha: Image.Image | None   # mode "L", same size, or None
    source_mode: str            # the mode the file had, for messages and tests
    format: str | None = None   # the file's format as Pillow names it (JPEG, PNG, ...)
    icc_profile: bytes | None = None  # the file's embedded color profile, if any
    exif: bytes | None = None   # the file's EXIF, orientation reset (the image is upright now)
    deep: np.ndarray | None = None  # a 16-bit input's own samples, upright: (H, W) gray or (H, W, 3) RGB
                                    # uint16; None for 8-bit inputs (module docstring)
    deep_alpha: np.ndarray | None = None   # with deep, its alpha: (H, W) uint16, or None where it has none
    pages: tuple[int, ...] = ()   # a multi-page TIFF's pages (their IFDs' offsets), for open_image(page=...);
                                  # () for one page
    frames: int = 1               # an animation's (GIF, WebP, PNG) frames: the first is the image


def open_image(path: str | Path, max_pixels: int | None = None, page: int = 0,
               max_pages: int | None = None) -> Plain:
    """Open, check the size before decoding, decode fully and normalise one image file; page: which of a
    multi-page TIFF's pages (one of Plain.pages: its directory's offset; 0 the first), else the first
    frame; max_pages: a TIFF with more pages than this is refused (tiffchain.page_offsets)."""
    pages: tuple[int, ...] = ()
    if page:   # that page read as the file's first: the chain is not walked again (tiffchain.FromPage)
        path = FromPage(_bytes(path), page, getattr(path, "shown", str(path)))
    elif is_tiff_source(path):
        pages = page_offsets(path, max_pages)   # once, for the whole file: a loop or too many pages fail here
        pages = pages if len(pages) > 1 else ()
    try:
        with Image.open(path) as im:
            check_size(im.size, max_pixels)
            frames = 1 if im.format == "TIFF" else getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)  # animated GIF/WebP/PNG: the first frame
                check_size(im.size, max_pixels)
            if is_png16(im):   # asked before load(), which lets go of the rawmode that says so
                decoded = png16(im, path)
                if decoded is not None:
                    return plain(*decoded)
            im.load()
            p = plain(im, tiff16(im, path))
            p.pages, p.frames = pages, frames
            return p
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        alone = tiff_alone(path, max_pixels)
        if alone is None:
            raise ImageError(f"cannot decode image: {e}") from e
        p = plain(*alone)
        p.pages = pages
        return p
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image: {e}") from e


def _bytes(source) -> bytes:
    """A file's bytes: a BytesIO's own (shared, not copied), else read."""
    if hasattr(source, "getvalue"):
        return source.getvalue()
    if hasattr(source, "read"):
        source.seek(0)
        return source.read()
    return Path(source).read_bytes()


def plain(im: Image.Image, samples: np.ndarray | None = None) -> Plain:
    """Normalise an already opened image (see module docstring); samples: its 16-bit samples, upright as
    the image will be: (H, W, 3) RGB, (H, W, 4) RGBA, (H, W, 2) gray and alpha or (H, W, 1) gray."""
    source_mode, fmt, icc = im.mode, im.format, im.info.get("icc_profile")
    # Pillow shows an 8-bit min-is-white TIFF inverted, as it should, but hands a 16-bit one's samples as
    # they are: a negative, unless inverted here
    min_is_white = fmt == "TIFF" and getattr(im, "tag_v2", {}).get(262) == 0 and im.mode.startswith("I;16")
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
    deep = deep_alpha = None
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode.startswith("I") or im.mode == "F":
        deep = _gray16(im)
        if min_is_white and deep is not None:
            deep = np.subtract(65535, deep, dtype=np.uint16)
        im = _high_depth_to_l(im if deep is None else deep)
    elif im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    if alpha is not None and alpha.getextrema() == (255, 255):
        alpha = None  # fully opaque: no need to carry it
    if samples is not None and samples.shape[:2] == (im.height, im.width):
        bands = samples.shape[2]
        deep = samples[..., 0] if bands <= 2 else samples[..., :3]
        deep_alpha = samples[..., -1] if bands in (2, 4) and samples[..., -1].min() < 65535 else None
    if alpha is not None and deep_alpha is None:
        deep = None   # an 8-bit alpha with no 16-bit one to go with the samples: an 8-bit result keeps it
    return Plain(im, alpha, source_mode, fmt, icc, exif, deep, deep_alpha)


def _gray16(im: Image.Image) -> np.ndarray | None:
    """A 16-bit gray image's samples as (H, W) uint16: I;16 modes, and I whose values fit 16 bits (not 8)."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False)   # I;16B is big-endian: native order here
    if im.mode == "I" and im.width and im.height:
        lo, hi = im.getextrema()
        if 0 <= lo and 255 < hi <= 65535:
            return np.asarray(im).astype(np.uint16)
    return None


def _high_depth_to_l(im: Image.Image | np.ndarray, block: int = 1 << 21) -> Image.Image:
    """16/32-bit integer or float gray (or 16-bit samples, (H, W) uint16) -> 8-bit L, scaled, not clipped.

    A block of rows at a time (about `block` samples): done whole, a 100 MP
    16-bit TIFF took 2.8 GB in float64 copies for a 100 MB result.
    """
    if isinstance(im, np.ndarray):
        (h, w), hi, mode = im.shape, 65535.0, "I;16"
    else:
        (w, h), mode = im.size, im.mode
        hi = float(im.getextrema()[1]) if w and h else 0.0
    out = np.empty((h, w), dtype=np.uint8)
    step = max(1, block // max(1, w))
    for r in range(0, h, step):
        rows = im[r:r + step] if isinstance(im, np.ndarray) else np.asarray(im.crop((0, r, w, min(h, r + step))))
        a = rows.astype(np.float64)
        if mode == "F" and hi <= 1.0:
            a *= 255.0
        elif mode.startswith("I;16") or hi > 255:
            a /= 257.0  # 16-bit range: 65535 -> 255
        out[r:r + step] = np.clip(np.rint(a, out=a), 0, 255, out=a)
    return Image.fromarray(out, "L")


# has_color(): a color picture has pixels whose chroma lies off the line of one tint. On a copy at most
# COLOR_SIDE px long (averaging away scanner noise, JPEG chroma blocks and color fringes at edges), a pixel
# counts as colored when its (Cb, Cr) is more than COLOR_LEVELS levels of 255 off the ray from neutral
# through the picture's mean tint: a gray picture saved as RGB has none, and a sepia, selenium or
# cyan-toned print, or a yellowed one, has its chroma along that one ray, however strong. A color
# photograph (sky and skin, leaves and brick) has hues on either side of any ray. The picture counts as
# color when more than COLOR_SHARE of its pixels do, so a pen mark or a small stamp on a gray print does
# not make it a color photograph. Measured (tests/unet/test_images.py's pictures and skimage's photos):
# gray and toned pictures saved as JPEG lie at most 2.7 levels off, and a gray one with noise of 5 levels
# in each channel has 0.4% of its pixels beyond 5; of the color photos, the least colorful (an orange cat
# on a brown rug) has 6.4% beyond 5 levels, the others 7-47%. A copy 256 px long kept 2.4% of a gray
# picture's noise of 3 levels beyond 5, so 128.
COLOR_SIDE = 128
COLOR_LEVELS = 5.0
COLOR_SHARE = 0.02
TINT_LEVELS = 2.0    # a mean tint weaker than this has no direction: every chroma counts as off it


def has_color(im: Image.Image) -> bool:
    """Whether an L or RGB image holds real color, not a gray or toned picture (see COLOR_LEVELS)."""
    if im.mode != "RGB" or not im.width or not im.height:
        return False
    small = im.copy() if max(im.size) <= COLOR_SIDE else im.resize(
        _fit(im.size, COLOR_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    c = np.asarray(small.convert("YCbCr"), dtype=np.float32)[..., 1:].reshape(-1, 2) - 128.0  # (n, 2) Cb, Cr
    size = np.hypot(c[:, 0], c[:, 1])
    tint = c.mean(axis=0)
    if np.hypot(*tint) > TINT_LEVELS:
        d = tint / np.hypot(*tint)
        along, across = c @ d, np.abs(c @ np.array([-d[1], d[0]]))
        off = np.where(along >= 0, across, size)   # beyond neutral, on the other side: all of it is off
    else:
        off = size
    return float((off > COLOR_LEVELS).mean()) > COLOR_SHARE


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    w, h = size
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


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
