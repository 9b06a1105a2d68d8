"""Pictures for the pages: small JPEG thumbnails of a result and its input, made once and kept in
<state>/web/thumbs/, and a browser-readable copy of a full-size file in a format a browser cannot show.

A list page never sends a full-size image. Thumbnails are made when first asked
for (not when the file is converted: conversion never waits for the dashboard),
from a file opened without following links, with the [limits] max_pixels check
before decoding, and written by temp name and rename.

A picture's decode takes its estimated memory from the conversion's memory
budget ([runtime] memory_budget_mb, the service hands it over) before it
starts, and gives it back once the picture is written: 32 browsers asking for
64 MP TIFFs wait their turn instead of decoding all at once. Each uncached
picture is made once: a lock per picture, and whoever waited on it finds the
cached copy. A JPEG's thumbnail is decoded at 1/2 to 1/8 of its size (draft),
an 8-bit TIFF's (a result) a strip at a time, each shrunk as it comes.
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from unet.images import ImageError, open_image

from ..conversion.budget import MemoryBudget
from ..core.fs import write_atomic
from .ondisk import Opened

THUMB = (320, 320)
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                   "BMP": "image/bmp"}

pillow_heif.register_heif_opener()   # HEIC inputs, as unet.images reads them

# Peak bytes a pixel of a picture being made (an estimate, rounded up): the decoded image (up to 16-bit
# RGBA), its upright and RGB copies, and its PNG or JPEG encoding.
PER_PIXEL = 16
OWN_BUDGET = MemoryBudget(512 << 20)   # where no service hands its budget over (the web alone, tests)
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


@contextmanager
def _one_at_a_time(key: str):
    """Hold the lock of picture key: one thread makes it, the others then find it made."""
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        yield
    with _locks_lock:
        if not lock.locked():   # nobody waits on it: let it go, so the table stays small
            _locks.pop(key, None)


@contextmanager
def _memory(budget: MemoryBudget, im: Image.Image, cost: int | None = None):
    """Hold the estimated cost of decoding im (at its size now, after draft()), or cost, in budget."""
    cost = im.width * im.height * PER_PIXEL + (1 << 20) if cost is None else cost
    if not budget.take(cost):
        raise Unreadable("the service is stopping")
    try:
        yield
    finally:
        budget.give(cost)


class Unreadable(Exception):
    """The file is not an image Pillow can show (or it is over max_pixels)."""


def _open(opened: Opened, max_pixels: int) -> tuple[Image.Image, bytes]:
    with os.fdopen(opened.fd, "rb") as f:
        data = f.read()
    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > max_pixels:
            raise Unreadable(f"{im.width}x{im.height} is over [limits] max_pixels")
        return im, data
    except UnidentifiedImageError as e:   # a TIFF Pillow cannot open (JPEG 2000, 16-bit gray and alpha...)
        try:
            return open_image(io.BytesIO(data), max_pixels).image, data
        except ImageError:
            raise Unreadable(str(e)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise Unreadable(str(e)) from None


def _rgb(im: Image.Image) -> Image.Image:
    # a 16-bit min-is-white TIFF: Pillow hands its samples over as stored (unet.images inverts them too)
    negative = im.format == "TIFF" and getattr(im, "tag_v2", {}).get(262) == 0 and im.mode.startswith("I;16")
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):   # 16-bit or float gray: scale to 8 bits for a look
        lo, hi = im.getextrema()
        im = im.point(lambda v: (v - lo) * 255.0 / max(hi - lo, 1)).convert("L")
    return ImageOps.invert(im.convert("RGB")) if negative else im.convert("RGB")


def _strip_cost(im: Image.Image) -> int | None:
    """What _tiff_reduced holds at once for an 8-bit gray or RGB TIFF in strips (one strip, decoded and as
    floats, and the shrunk picture); None for any other TIFF, decoded whole."""
    tags = getattr(im, "tag_v2", {})
    if im.mode not in ("L", "RGB") or 322 in tags or tags.get(262) not in (1, 2) or tags.get(284, 1) != 1 \
            or tags.get(274, 1) != 1 or 338 in tags:
        return None
    rows = int(tags.get(278, im.height))
    cost = min(rows, im.height) * im.width * len(im.mode) * 10 + (1 << 20) + 4 * max(THUMB) ** 2 * PER_PIXEL
    shrinks = max(im.size) // (2 * max(THUMB)) >= 2
    return cost if shrinks and cost < im.width * im.height * PER_PIXEL else None


def _tiff_reduced(data: bytes, side: int) -> Image.Image | None:
    """An 8-bit gray or RGB TIFF in strips (_strip_cost), read a strip at a time by tifffile and shrunk as
    it comes, to the mean of k x k blocks, about twice side long: a 64 MP TIFF's thumbnail is never whole
    in memory. None where tifffile reads it otherwise (the caller decodes it whole)."""
    import tifffile   # only for these pictures

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            h, w, bands = page.imagelength, page.imagewidth, page.samplesperpixel
            k = max(1, max(w, h) // (2 * side))
            if page.is_tiled or page.dtype != np.uint8 or bands not in (1, 3) or k == 1:
                return None
            wk, out, carry, seen = w // k * k, [], np.empty((0, w, bands), np.uint8), 0
            for segment, _, _ in page.segments(sort=True):
                rows = segment.reshape(-1, w, bands)[:max(0, h - seen)]   # the last strip may be padded
                seen += len(rows)
                carry = np.concatenate([carry, rows])
                n = len(carry) // k * k
                if n:
                    block = carry[:n, :wk].reshape(n // k, k, wk // k, k, bands).astype(np.float32)
                    out.append(block.mean(axis=(1, 3)).round().astype(np.uint8))
                    carry = carry[n:]
    except Exception:   # whatever tifffile cannot read this way, Pillow decodes whole
        return None
    if not out:
        return None
    a = np.concatenate(out)
    return Image.fromarray(a[..., 0] if bands == 1 else a)


def thumbnail(cache: Path, key: str, opened: Opened, max_pixels: int, budget: MemoryBudget | None = None) -> Path:
    """cache/KEY.jpg, made from opened (which this closes) unless it is there already; its decode's memory
    is taken from budget (the module docstring)."""
    path = cache / f"{key}.jpg"
    with _one_at_a_time(path.name):
        if path.exists():
            os.close(opened.fd)
            return path
        im, data = _open(opened, max_pixels)
        if im.format == "JPEG":
            im.draft("RGB", THUMB)   # decode at 1/2, 1/4 or 1/8 size: a thumbnail of a 24 MP JPEG in milliseconds
        jpeg, strips = None, _strip_cost(im) if im.format == "TIFF" else None
        if strips:
            with _memory(budget or OWN_BUDGET, im, strips):
                small = _tiff_reduced(data, max(THUMB))   # a strip at a time
                jpeg = _jpeg(small) if small is not None else None
        if jpeg is None:
            with _memory(budget or OWN_BUDGET, im):
                jpeg = _jpeg(im)
        del im, data
        return write_atomic(cache, path.name, jpeg, on_exists="replace")


def _jpeg(im: Image.Image) -> bytes:
    im = _rgb(im)
    im.thumbnail(THUMB)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


def viewable(cache: Path, key: str, opened: Opened, max_pixels: int,
             budget: MemoryBudget | None = None) -> tuple[Path | bytes, str]:
    """(the bytes, or a cached PNG's path; its media type) of a full-size file for the browser: a JPEG, PNG,
    WebP, GIF or BMP as it is, any other format (TIFF, HEIC, AVIF) as a PNG made once and cached."""
    path = cache / f"{key}.png"
    with _one_at_a_time(path.name):
        if path.exists():
            os.close(opened.fd)
            return path, "image/png"
        im, data = _open(opened, max_pixels)
        if im.format in BROWSER_FORMATS:
            return data, BROWSER_FORMATS[im.format]
        with _memory(budget or OWN_BUDGET, im):
            out = io.BytesIO()
            _rgb(im).save(out, "PNG", compress_level=1)
            del im
            return write_atomic(cache, path.name, out.getvalue(), on_exists="replace"), "image/png"
