"""Encoding results: the image half of writing an output (format options, color profile, EXIF, YCbCr JPEGs).

Which format an extension means is core.names.EXT_FORMAT; writing the encoded
bytes where a reader never sees half of them is core.fs.write_atomic.
"""

from __future__ import annotations

import os
import tempfile

from PIL import Image

from unet.images import Plain

from ..core.names import EXT_FORMAT


def takes_ycc(ext: str) -> bool:
    """Whether encode() takes a YCbCr image for this extension as it is (JPEG stores YCbCr)."""
    return EXT_FORMAT[ext.lower()] == "JPEG"


def encode(image: Image.Image, ext: str, quality: int, source: Plain | None = None) -> bytes:
    """The image encoded for its extension, with the source's color profile and EXIF where they fit."""
    fmt = EXT_FORMAT[ext.lower()]
    if image.mode == "YCbCr" and fmt != "JPEG":
        image = image.convert("RGB")
    if fmt in ("JPEG", "BMP") and image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1] if image.mode == "RGBA" else "L")
    kwargs = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "JPEG":
        kwargs["subsampling"] = "4:2:0"   # chroma at half resolution, as a YCbCr result from finish() holds it
    if fmt == "PNG":
        # Lossless at any level. Level 3 took 0.42x the time of Pillow's default 6 on a 12 MP result and
        # made files 2% larger on the plates (-3% on the 12 MP one).
        kwargs["compress_level"] = 3
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    if source is not None:
        icc = source.icc_profile
        # An ICC profile describes one color space: a gray profile on an RGB result would be wrong.
        if icc and len(icc) > 20 and _icc_fits(icc[16:20], image.mode):
            kwargs["icc_profile"] = icc
        if source.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
            kwargs["exif"] = source.exif
    with _scratch() as f:
        image.save(f, format=fmt, **kwargs)
        f.seek(0)
        return f.read()


def _scratch():
    """An in-memory file with a real descriptor to encode into.

    Pillow encodes into a file descriptor in one call that lets go of the
    GIL; into a BytesIO it encodes block by block holding it, and the thread
    running the network then waits for the GIL at every layer: a forward pass
    of 40 ms took 900 while a 12 MP JPEG was being encoded beside it.
    """
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("reverser-encode", os.MFD_CLOEXEC), "w+b")
    return tempfile.TemporaryFile()


def _icc_fits(space: bytes, mode: str) -> bool:
    return (space == b"RGB " and mode in ("RGB", "RGBA", "YCbCr")) or (space == b"GRAY" and mode in ("L", "LA"))


