"""What Pillow does not read whole, read through imagecodecs and tifffile: 16-bit samples, the TIFFs Pillow
cannot open, and a TIFF's pages. images.open_image asks this module, and images.plain() takes what it gives.

Pillow decodes a 16-bit RGB or RGBA TIFF or PNG, and a 16-bit gray-and-alpha
PNG, to their high bytes only. tifffile decodes such a TIFF whole with its
codecs (LZW, zstd, packbits; deflate and LZMA it decodes alone), beside
Pillow's 8-bit copy (tiff16), and libpng, through imagecodecs.png_decode,
such a PNG, interlaced or not, once: its 8-bit copy is then made from the
samples' high bytes, as Pillow's would be (png16). A TIFF that Pillow cannot
open at all (16-bit gray with alpha; JPEG 2000, JPEG XL or LERC compressed;
12-bit JPEG) is read by tifffile alone (tiff_alone). An install without
imagecodecs reads a 16-bit color PNG and an LZW TIFF at 8 bits, and works
otherwise as ever.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import struct
import zlib

import numpy as np
from PIL import Image

from .imageerror import ImageError, check_size
from .tiffchain import is_tiff_source, page_offsets


def is_deep(im: Image.Image) -> bool:
    """Whether an opened (not yet decoded) image has 16-bit samples that plain() may keep (Plain.deep)."""
    return (im.mode.startswith("I;16") or im.mode == "I"
            or _is_tiff16(im) and (_codecs() is not None or _tiff_compression(im) in PLAIN_TIFF)
            or is_png16(im) and _codecs() is not None)


def _is_tiff16(im: Image.Image) -> bool:
    """A 16-bit RGB TIFF, or RGBA whose alpha is unassociated (Pillow reads associated alpha its own way)."""
    if im.format != "TIFF" or im.mode not in ("RGB", "RGBA"):
        return False
    tags = getattr(im, "tag_v2", {})
    bits = tuple(tags.get(258, ()))
    return bits == (16, 16, 16) or (im.mode == "RGBA" and bits == (16,) * 4 and tuple(tags.get(338, ())) == (2,))


def _tiff_compression(im: Image.Image) -> int:
    return int(getattr(im, "tag_v2", {}).get(259, 1))


PNG16_RAWMODES = ("RGB;16B", "RGBA;16B", "LA;16B")   # Pillow reads them at 8 bits (LA as RGBA)


def is_png16(im: Image.Image) -> bool:
    """Whether an opened, not yet loaded PNG is 16-bit RGB (a transparent color, its tRNS chunk, becomes
    libpng's alpha band), RGBA, or gray with alpha. 16-bit gray is Pillow's I;16, read whole already."""
    return im.format == "PNG" and bool(im.tile) and im.tile[0][3] in PNG16_RAWMODES


# TIFF compressions tifffile decodes without imagecodecs (Python's zlib and lzma): none, deflate (both
# codes), LZMA. LZW, packbits and zstd need imagecodecs.
PLAIN_TIFF = (1, 8, 32946, 34925)


@functools.cache
def _codecs():
    """The imagecodecs module, or None where it is not installed (16-bit color PNG and LZW TIFF: 8 bits)."""
    try:
        import imagecodecs
    except ImportError:
        return None
    # imagecodecs calls png_read_image without turning interlace handling on; libpng warns, through the
    # "imagecodecs" logger, and then handles the interlace itself (the tests compare every sample).
    logging.getLogger("imagecodecs").addFilter(lambda r: "Interlace handling" not in r.getMessage())
    return imagecodecs


# TIFF/EXIF orientation -> how exif_transpose turns an image, for (H, W[, C]) samples (views, no copies).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def png16(im: Image.Image, source) -> tuple[Image.Image, np.ndarray] | None:
    """A 16-bit color or alpha PNG (is_png16) decoded once, by libpng: its 8-bit copy, and its samples
    (H, W, 2 to 4) uint16 upright; None without imagecodecs or for a PNG libpng refuses (Pillow then
    decodes it, to 8 bits).

    libpng decodes the file's bytes, interlaced or not: a BytesIO's own
    (getvalue() shares them, no copy) or a file's, mapped. The 8-bit copy is
    the samples' high bytes, exactly what Pillow's own decoding gives, and
    carries the file's metadata: what Pillow read before the image data, and
    an eXIf or XMP chunk after it (Pillow reads those only as it decodes).
    The samples are turned by the orientation exif_transpose will read from
    that copy (EXIF, else XMP), as plain() turns the copy.
    """
    codecs = _codecs()
    if codecs is None:
        return None
    try:
        with contextlib.ExitStack() as files:
            if hasattr(source, "getvalue"):
                data = source.getvalue()
            elif hasattr(source, "read"):
                source.seek(0)
                data = source.read()
            else:   # mapped, not read: clean pages of the page cache, which the kernel may drop, not a copy
                f = files.enter_context(open(source, "rb"))
                data = files.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            a = codecs.png_decode(data)
            late = _png_late_metadata(data)
    except Exception:  # a PNG libpng refuses keeps Pillow's 8 bits
        return None
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[:2] != (im.height, im.width) or a.shape[2] not in (2, 3, 4):
        return None
    a = a.astype("<u2", copy=False)                  # little-endian: each sample's high byte is its second
    eight = Image.fromarray(np.ascontiguousarray(a.view(np.uint8)[..., 1::2]))   # LA, RGB or RGBA
    eight.info = {**im.info, **late}
    eight.format = im.format
    return eight, _ORIENT.get(int(eight.getexif().get(274, 1)), lambda x: x)(a)


def _png_late_metadata(data) -> dict:
    """The eXIf and XMP (iTXt XML:com.adobe.xmp) chunks after a PNG's image data, as Pillow's info names
    them. Only the chunks' headers are read on the way, not the image data."""
    info, pos, seen_image = {}, 8, False
    try:
        while pos + 8 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, pos)
            body = pos + 8
            if kind == b"IEND":
                break
            if kind == b"IDAT":
                seen_image = True
            elif seen_image and kind == b"eXIf":
                info["exif"] = bytes(data[body: body + length])
            elif seen_image and kind == b"iTXt" and bytes(data[body: body + 18]) == b"XML:com.adobe.xmp\0":
                flag = data[body + 18]
                lang = bytes(data[body + 20: body + length]).split(b"\0", 2)   # language, translated, text
                text = lang[2] if len(lang) == 3 else b""
                info["XML:com.adobe.xmp"] = (zlib.decompress(text) if flag else text).decode("utf-8", "replace")
            pos = body + length + 4
    except (struct.error, zlib.error, IndexError):
        pass   # a damaged chunk after the image: what was found so far
    return info


def tiff16(im: Image.Image, source, index: int = 0) -> np.ndarray | None:
    """A 16-bit RGB or RGBA TIFF's samples (_is_tiff16), (H, W, 3 or 4) uint16, upright, or None.

    Pillow decodes such a TIFF to the high byte of each sample, and turns it
    upright by its orientation tag as it loads; tifffile reads it whole, and
    the samples are turned here the same way. tifffile decodes an LZW, zstd or
    packbits TIFF with imagecodecs (PLAIN_TIFF without it); a TIFF it cannot
    read stays at Pillow's 8 bits.
    """
    if not _is_tiff16(im):
        return None
    import tifffile   # only for these files

    try:
        if hasattr(source, "seek"):
            source.seek(0)
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[index]   # the frame Pillow decoded
            a = page.asarray()
            if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE:
                a = np.moveaxis(a, 0, -1)
            a = _ORIENT.get(int(page.tags.valueof(274, 1)), lambda x: x)(a)
    except Exception:  # a TIFF tifffile cannot read keeps Pillow's 8 bits
        return None
    return a if a.dtype == np.uint16 and a.shape == (im.height, im.width, len(im.mode)) else None


def tiff_pages(source) -> tuple[int, ...]:
    """A multi-page TIFF's pages, as the offsets of their image directories (tiffchain.page_offsets, which
    leaves out a scanner's reduced-resolution previews); () when it has one page or they do not read."""
    try:
        pages = page_offsets(source)
    except (ImageError, OSError):
        return ()
    return pages if len(pages) > 1 else ()


def tiff_alone(source, max_pixels: int | None) -> tuple[Image.Image, np.ndarray | None] | None:
    """A TIFF that Pillow cannot open, read by tifffile: 8- or 16-bit gray or RGB, with an alpha band or
    not, by any compression tifffile decodes, as (its 8-bit image, its 16-bit samples or None) for
    images.plain() (its first page: a later one is read through tiffchain.FromPage); None for what is not
    a TIFF (the caller's error stands).

    The size is checked from the page's header before its pixels are decoded.
    An associated (premultiplied) alpha is divided out, as Pillow does for an
    RGBa TIFF; an extra band not said to be alpha is left out, as Pillow
    leaves it. The orientation tag is honoured as exif_transpose would.
    """
    if not is_tiff_source(source):
        return None
    import tifffile   # only for these files

    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]   # IndexError for a TIFF with no page it can read: the error below
            mode = _alone_mode(page)
            check_size((page.imagewidth, page.imagelength), max_pixels)
            a = page.asarray()
            separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            bits = int(page.bitspersample)
            photometric, extras = _photometric(page), tuple(page.extrasamples or ())
            orientation, icc = int(page.tags.valueof(274, 1)), page.tags.valueof(34675)
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"cannot decode image: a TIFF that neither Pillow nor tifffile can read "
                         f"({type(e).__name__}: {e})") from e
    if a.ndim == 3 and separate:
        a = np.moveaxis(a, 0, -1)
    a = a if a.ndim == 3 else a[..., None]
    color = 3 if photometric == 2 else 1
    premultiplied = len(mode) > color and extras[:1] == (1,)
    for rows in _row_blocks(a):   # in place, a block of rows at a time: no float copy of a whole scan
        _normalise_rows(rows, bits, photometric == 0, color if premultiplied else 0)
    a = np.ascontiguousarray(_ORIENT.get(orientation, lambda x: x)(a[..., :len(mode)]))
    eight = a if a.dtype == np.uint8 else a.astype("<u2", copy=False).view(np.uint8)[..., 1::2]
    im = Image.fromarray(np.ascontiguousarray(eight[..., 0] if mode == "L" else eight))   # L, LA, RGB or RGBA
    im.format = "TIFF"
    if isinstance(icc, bytes):
        im.info["icc_profile"] = icc
    samples = a if a.dtype == np.uint16 else None   # 8-bit samples are in im now: let go of them first
    del a, eight
    return im, samples


def _row_blocks(a: np.ndarray, block: int = 1 << 21):
    step = max(1, block // max(1, a[0].size))
    return (a[r:r + step] for r in range(0, len(a), step))


def _normalise_rows(rows: np.ndarray, bits: int, min_is_white: bool, premultiplied: int) -> None:
    """In place, (rows, W, bands) samples: to the full range of their type from `bits` (a 12-bit JPEG's,
    say), min-is-white gray inverted, and an associated alpha divided out of the `premultiplied` first
    bands (0: none)."""
    peak = np.iinfo(rows.dtype).max
    f = rows.astype(np.float32)
    if bits < rows.itemsize * 8:
        f *= peak / ((1 << bits) - 1)
    if min_is_white:
        f[..., 0] = peak - f[..., 0]
    if premultiplied:
        al = f[..., premultiplied:premultiplied + 1]
        f[..., :premultiplied] *= np.where(al > 0, peak / np.maximum(al, 1), 0)
    rows[...] = np.rint(f, out=f).clip(0, peak, out=f)


def tiff_alone_header(source) -> tuple[int, int, str, bool] | None:
    """For a TIFF Pillow cannot open that tiff_alone reads: (width, height, its mode as Pillow would
    name it, whether its samples are 16-bit), from the header; None otherwise."""
    if not is_tiff_source(source):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            return page.imagewidth, page.imagelength, _alone_mode(page), page.dtype == np.uint16
    except Exception:
        return None


def _photometric(page) -> int:
    """The page's photometric interpretation as tifffile decodes it: JPEG's YCbCr comes out RGB (2)."""
    photometric = int(page.photometric)
    return 2 if photometric == 6 and int(page.compression) in (7, 34892) else photometric


def _alone_mode(page) -> str:
    """The mode of what tiff_alone makes of a tifffile page (L, LA, RGB, RGBA), or ImageError."""
    photometric, bands = _photometric(page), page.samplesperpixel
    alpha = tuple(page.extrasamples or ())[:1] in ((1,), (2,))
    if page.dtype in (np.uint8, np.uint16) and photometric in (0, 1) and bands in (1, 2):
        return "LA" if bands == 2 and alpha else "L"
    if page.dtype in (np.uint8, np.uint16) and photometric == 2 and bands in (3, 4):
        return "RGBA" if bands == 4 and alpha else "RGB"
    raise ImageError(f"cannot decode image: a TIFF of {bands} {page.dtype} samples a pixel, photometric "
                     f"{photometric}, is not read here (8- or 16-bit gray or RGB, with alpha or not)")
