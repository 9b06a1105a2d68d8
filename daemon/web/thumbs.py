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
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from unet.deepread import tiff_alone_header
from unet.images import ImageError, open_image

from ..conversion.converting.budget import MemoryBudget
from ..core.fs import write_atomic
from .ondisk import Opened

THUMB = (320, 320)
BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                   "BMP": "image/bmp"}

pillow_heif.register_heif_opener()   # HEIC inputs, as unet.images reads them

# Peak bytes a pixel of a picture being made, beside its file's bytes: the decoded image, its upright and
# RGB copies, and its PNG or JPEG encoding. Measured (bench/pictures_bench.py dashboard): a 64 MP RGB TIFF's
# full view and thumbnail together +1407 MB peak RSS, 22 bytes a pixel, when 16 were estimated.
PER_PIXEL = 22
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
def _memory(budget: MemoryBudget, pic: "_Picture", cost: int | None = None):
    """Hold the estimated cost of decoding pic (at its size now, after draft()), or cost, in budget; the
    file's compressed bytes, read as it decodes, count too."""
    w, h = pic.im.size if pic.im is not None else pic.size
    cost = (w * h * PER_PIXEL if cost is None else cost) + pic.bytes + (1 << 20)
    if not budget.take(cost):
        raise Unreadable("the service is stopping")
    try:
        yield
    finally:
        budget.give(cost)


class Unreadable(Exception):
    """The file is not an image Pillow can show (or it is over max_pixels)."""


@dataclass
class _Picture:
    """A file opened for a picture, its header read, nothing decoded yet."""

    f: typing.BinaryIO
    im: Image.Image | None      # Pillow's (lazy), or None for a TIFF only tifffile reads (decoded by image())
    size: tuple[int, int]
    bytes: int                  # the file's size
    max_pixels: int

    def image(self) -> Image.Image:
        if self.im is not None:
            return self.im
        try:
            self.f.seek(0)
            return open_image(self.f, self.max_pixels).image
        except ImageError as e:
            raise Unreadable(str(e)) from None


def _open(opened: Opened, max_pixels: int) -> _Picture:
    """The file's header only: no picture waiting for its turn holds its file's bytes or pixels."""
    f = os.fdopen(opened.fd, "rb")
    f.raw.name = opened.name   # tifffile asks for a file's name; one opened by descriptor has a number
    try:
        try:
            im = Image.open(f)
            size = im.size
        except UnidentifiedImageError as e:   # a TIFF Pillow cannot open (JPEG 2000, 16-bit gray and alpha...)
            header = tiff_alone_header(f)
            if header is None:
                raise Unreadable(str(e)) from None
            im, size = None, header[:2]
        if size[0] * size[1] > max_pixels:
            raise Unreadable(f"{size[0]}x{size[1]} is over [limits] max_pixels")
        return _Picture(f, im, size, os.fstat(f.fileno()).st_size, max_pixels)
    except Unreadable:
        f.close()
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        f.close()
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


def _tiff_reduced(f: typing.BinaryIO, side: int) -> Image.Image | None:
    """An 8-bit gray or RGB TIFF in strips (_strip_cost), read a strip at a time by tifffile and shrunk as
    it comes, to the mean of k x k blocks, about twice side long: a 64 MP TIFF's thumbnail is never whole
    in memory. None where tifffile reads it otherwise (the caller decodes it whole)."""
    import tifffile   # only for these pictures

    try:
        f.seek(0)
        with tifffile.TiffFile(f) as tif:
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
        pic = _open(opened, max_pixels)
        with pic.f:
            if pic.im is not None and pic.im.format == "JPEG":
                pic.im.draft("RGB", THUMB)   # decode at 1/2 to 1/8 size: a 24 MP JPEG's thumbnail in milliseconds
            jpeg, strips = None, _strip_cost(pic.im) if pic.im is not None and pic.im.format == "TIFF" else None
            if strips:
                with _memory(budget or OWN_BUDGET, pic, strips):
                    small = _tiff_reduced(pic.f, max(THUMB))   # a strip at a time
                    jpeg = _jpeg(small) if small is not None else None
            if jpeg is None:
                with _memory(budget or OWN_BUDGET, pic):
                    jpeg = _jpeg(pic.image())
            pic.im = None
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
        pic = _open(opened, max_pixels)
        with pic.f:
            if pic.im is not None and pic.im.format in BROWSER_FORMATS:
                pic.f.seek(0)
                return pic.f.read(), BROWSER_FORMATS[pic.im.format]   # as it is: not decoded
            with _memory(budget or OWN_BUDGET, pic):
                out = io.BytesIO()
                _rgb(pic.image()).save(out, "PNG", compress_level=1)
                pic.im = None
                return write_atomic(cache, path.name, out.getbuffer(), on_exists="replace"), "image/png"
