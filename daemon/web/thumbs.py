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
cached copy. A JPEG's thumbnail is decoded at 1/2 to 1/8 of its size (draft).
"""

from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from pathlib import Path

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
def _memory(budget: MemoryBudget, im: Image.Image):
    """Hold the estimated cost of decoding im (at its size now, after draft()) in budget."""
    cost = im.width * im.height * PER_PIXEL + (1 << 20)
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


def thumbnail(cache: Path, key: str, opened: Opened, max_pixels: int, budget: MemoryBudget | None = None) -> Path:
    """cache/KEY.jpg, made from opened (which this closes) unless it is there already; its decode's memory
    is taken from budget (the module docstring)."""
    path = cache / f"{key}.jpg"
    with _one_at_a_time(path.name):
        if path.exists():
            os.close(opened.fd)
            return path
        im, _ = _open(opened, max_pixels)
        if im.format == "JPEG":
            im.draft("RGB", THUMB)   # decode at 1/2, 1/4 or 1/8 size: a thumbnail of a 24 MP JPEG in milliseconds
        with _memory(budget or OWN_BUDGET, im):
            im = _rgb(im)
            im.thumbnail(THUMB)
            out = io.BytesIO()
            im.save(out, "JPEG", quality=85)
            del im
            return write_atomic(cache, path.name, out.getvalue(), on_exists="replace")


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
