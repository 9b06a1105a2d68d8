"""16-bit-per-channel color and alpha results, which Pillow cannot write: PNG written here, TIFF through tifffile.

Pillow has no 16-bit color mode, nor 16-bit gray with alpha, so an (H, W, 3)
uint16 result, with its alpha (H, W, 4) or gray with alpha (H, W, 2), goes to
the file another way. The alpha is unassociated (PNG's kind; TIFF's extra
sample 2), as the input's was. TIFF: tifffile (deflate, horizontal predictor, the ICC
profile, and the EXIF's text tags in the main IFD: tifffile writes no EXIF
sub-IFD). PNG is written here, because no small library writes it fast:
pypng converts every row in Python, which would take minutes on a 100 MP scan;
numpy and zlib do it a block of rows at a time. Each row is filtered "Up"
(the difference from the row above), which compressed a 16-bit photo as
well as Sub (4.70 against 4.76 MB) and better than no filter (5.74 MB).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import BinaryIO

import numpy as np
from PIL import Image

PNG_LEVEL = 3             # zlib level, as Pillow's PNG results use (encode.py)
BLOCK = 1 << 21           # samples filtered and compressed at a time: memory stays a few MB beside the image
TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)   # description, make, model, software, date, artist, copyright


# PNG color types and TIFF photometric interpretations by the number of bands
PNG_COLOR_TYPE = {2: 4, 3: 2, 4: 6}
TIFF_PHOTOMETRIC = {1: "minisblack", 2: "minisblack", 3: "rgb", 4: "rgb"}


def tiff_options(bands: int, icc: bytes | None, exif: bytes | None = None) -> dict:
    """tifffile's write options for a result of 1 to 4 bands (the 2nd and 4th alpha, unassociated):
    deflate with the predictor, the profile, the EXIF's text tags; a result here or a book's page."""
    return dict(photometric=TIFF_PHOTOMETRIC[bands], planarconfig="contig",
                extrasamples=[2] if bands in (2, 4) else None, compression="zlib", predictor=True,
                iccprofile=icc, metadata=None, software=False, extratags=_text_tags(exif))


def encode16(samples: np.ndarray, fmt: str, icc: bytes | None, exif: bytes | None) -> bytes:
    """(H, W, 2, 3 or 4) uint16 (gray and alpha, RGB, RGBA) as a 16-bit-per-channel PNG or TIFF, with the
    profile and EXIF given.

    Into a BytesIO (tifffile wants a named file or one): the compression is
    zlib's, which lets go of Python's lock whatever the file (encode.py's
    _scratch is for Pillow's encoders).
    """
    if fmt not in ("PNG", "TIFF"):
        raise ValueError(f"a 16-bit color result cannot be written as {fmt}")
    if samples.ndim != 3 or samples.shape[2] not in PNG_COLOR_TYPE:
        raise ValueError(f"16-bit samples of shape {samples.shape} are not gray and alpha, RGB or RGBA")
    f = io.BytesIO()
    (_png if fmt == "PNG" else _tiff)(f, samples, icc, exif)
    return f.getvalue()


def _chunk(f: BinaryIO, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)))


def _png(f: BinaryIO, samples: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    """PNG (ISO/IEC 15948): IHDR (bit depth 16, color type 4, 2 or 6), iCCP, eXIf, IDATs, IEND."""
    h, w, bands = samples.shape
    f.write(b"\x89PNG\r\n\x1a\n")
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 16, PNG_COLOR_TYPE[bands], 0, 0, 0))
    if icc:
        _chunk(f, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    if exif:
        _chunk(f, b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    z = zlib.compressobj(PNG_LEVEL)
    row_bytes = w * bands * 2
    above = np.zeros(row_bytes, dtype=np.uint8)   # the row above the first is zeros (PNG's rule)
    step = max(1, BLOCK // max(1, w * bands))
    for r in range(0, h, step):
        rows = samples[r:r + step].astype(">u2").reshape(-1, w * bands).view(np.uint8)   # big-endian bytes
        filtered = np.empty((len(rows), row_bytes + 1), dtype=np.uint8)
        filtered[:, 0] = 2                         # filter type Up
        np.subtract(rows[0], above, out=filtered[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])   # uint8 arithmetic wraps, as PNG's does
        above = rows[-1].copy()
        data = z.compress(filtered.data)
        if data:
            _chunk(f, b"IDAT", data)
    _chunk(f, b"IDAT", z.flush())
    _chunk(f, b"IEND", b"")


def _tiff(f: BinaryIO, samples: np.ndarray, icc: bytes | None, exif: bytes | None) -> None:
    import tifffile   # only for these results

    tifffile.imwrite(f, samples, **tiff_options(samples.shape[2], icc, exif))


def _text_tags(exif: bytes | None) -> list[tuple]:
    """The EXIF's text tags of the main IFD, as tifffile's extratags."""
    if not exif:
        return []
    try:
        tags = Image.Exif()
        tags.load(exif)
        return [(tag, "s", 0, tags[tag], True) for tag in TEXT_TAGS
                if isinstance(tags.get(tag), str) and tags[tag].isascii()]
    except Exception:  # a broken EXIF block must not cost the result
        return []
