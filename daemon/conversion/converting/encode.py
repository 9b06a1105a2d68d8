"""Encoding results: the image half of writing an output (format options, color profile, EXIF, YCbCr JPEGs).

Which format an extension means is core.names.EXT_FORMAT; writing the encoded
bytes where a reader never sees half of them is core.fs.write_atomic.

The source's color profile goes into a result only when it describes the
result's color space (a GRAY profile on a colorized result would be wrong; an
untagged RGB result reads as sRGB) and is no larger than MAX_ICC_BYTES. Its
EXIF goes without the tags that describe how the source's pixels were stored
or colored (a TIFF's own tags, a profile among them), and only up to
MAX_EXIF_BYTES. Nothing else rides along: a result built from the source
keeps the source's Pillow info, which some writers would otherwise copy.

A 16-bit input's result comes as uint16 samples where the format holds them
(PNG and TIFF, keeps_depth): gray through Pillow's I;16, color through
encode16.py, which also writes the input's 16-bit alpha (Plain.deep_alpha)
beside gray or color samples.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image

from unet.images import Plain

from ...core.names import EXT_FORMAT
from .encode16 import encode16

MAX_ICC_BYTES = 4 << 20     # real profiles are kilobytes, a large printer's a few megabytes; more is not one
MAX_EXIF_BYTES = 64 << 10   # what a JPEG's EXIF segment holds
# TIFF tags of the source's pixel layout and colorimetry (TIFF 6.0; 34675 its ICC profile, 34377 and 37724
# Photoshop's own data): true of the source's pixels, not of a result's.
SOURCE_PIXEL_TAGS = frozenset({254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284,
                               290, 291, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 338, 339,
                               340, 341, 347, 513, 514, 529, 530, 532, 34377, 34675, 37724})


def takes_ycc(ext: str) -> bool:
    """Whether encode() takes a YCbCr image for this extension as it is (JPEG stores YCbCr)."""
    return EXT_FORMAT[ext.lower()] == "JPEG"


BAND_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}   # an (H, W, bands) result's mode, for its metadata


def with_deep_alpha(samples: np.ndarray, source: Plain | None) -> np.ndarray:
    """A 16-bit result's samples with the source's 16-bit alpha beside them, (H, W, 2) or (H, W, 4), when
    it has one; else as they are."""
    alpha = source.deep_alpha if source is not None else None
    if alpha is None or alpha.shape != samples.shape[:2]:
        return samples
    return np.dstack([samples, alpha])


def keeps_pages(ext: str) -> bool:
    """Whether this extension's format holds many pages, so a multi-page input keeps them (document.py)."""
    return EXT_FORMAT[ext.lower()] == "TIFF"


def keeps_depth(ext: str) -> bool:
    """Whether this extension's format holds 16 bits per channel, so encode() takes uint16 samples for it."""
    return EXT_FORMAT[ext.lower()] in ("PNG", "TIFF")


def encode(image: Image.Image | np.ndarray, ext: str, quality: int, source: Plain | None = None) -> bytes:
    """The image (or uint16 samples, (H, W) or (H, W, 3), for keeps_depth's formats) encoded for its
    extension, with the source's color profile and EXIF where they fit; samples get the source's 16-bit
    alpha, if it has one."""
    fmt = EXT_FORMAT[ext.lower()]
    if isinstance(image, np.ndarray):
        image = with_deep_alpha(image, source)
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return encode16(image, fmt, *metadata(source, BAND_MODES[image.shape[2]], fmt))
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)   # (H, W) uint16: I;16
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
    # TIFF and PNG writers fall back to image.info's profile and EXIF: only what is passed below goes in.
    image.info = {k: v for k, v in image.info.items() if k == "dpi"}
    icc, exif = metadata(source, image.mode, fmt)
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif
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


def metadata(source: Plain | None, mode: str, fmt: str) -> tuple[bytes | None, bytes | None]:
    """The source's ICC profile and EXIF that may go into a result of this mode and format."""
    if source is None:
        return None, None
    icc = source.icc_profile if source.icc_profile and _icc_fits(source.icc_profile, mode) else None
    exif = _result_exif(source.exif) if source.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF") else None
    return icc, exif


def _icc_fits(icc: bytes, mode: str) -> bool:
    """An ICC profile (a 128-byte header, 'acsp' at 36, the color space at 16) for this mode, not too large."""
    if not 128 <= len(icc) <= MAX_ICC_BYTES or icc[36:40] != b"acsp":
        return False
    space = icc[16:20]
    return (space == b"RGB " and mode in ("RGB", "RGBA", "YCbCr")) or (space == b"GRAY" and mode in ("L", "LA", "I;16"))


def _result_exif(data: bytes) -> bytes | None:
    """The source's EXIF without the tags of its pixels (SOURCE_PIXEL_TAGS); None if broken or too large."""
    try:
        exif = Image.Exif()
        exif.load(data)
        for tag in SOURCE_PIXEL_TAGS & set(exif):
            del exif[tag]
        out = exif.tobytes()
    except Exception:  # a broken EXIF block must not cost the result
        return None
    return out if len(out) <= MAX_EXIF_BYTES and len(exif) else None


