"""Reading images of any common kind into the few modes the model knows.

Scanners and cameras hand us L, LA, RGB, RGBA, P, 1, I;16, I, F and CMYK in
JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF and AVIF, often EXIF-rotated. Everything is reduced
to 8-bit "L" or "RGB" plus an optional alpha band kept aside, so outputs can
carry the input's transparency and orientation.

A 16-bit input also keeps its own samples (Plain.deep, and Plain.deep_alpha
for its transparency), so a task can finish its result at full depth while the
network works on the 8-bit copy: 16-bit gray (Pillow's I;16 modes, or I within
16 bits), and 16-bit RGB or RGBA TIFF and PNG and gray-and-alpha PNG, which
Pillow decodes to their high bytes only. imagecodecs reads those samples:
tifffile decodes a TIFF whole with its codecs (LZW, zstd, packbits; deflate
and LZMA it decodes alone), beside Pillow's 8-bit copy, and libpng, through
imagecodecs.png_decode, a PNG, interlaced or not, once: its 8-bit copy is then
made from the samples' high bytes, as Pillow's would be. A TIFF that Pillow
cannot open at all (16-bit gray with alpha; JPEG 2000, JPEG XL or LERC
compressed; 12-bit JPEG) is read by tifffile
(_tiff_alone). An install without imagecodecs reads a 16-bit color PNG and an
LZW TIFF at 8 bits, and works otherwise as ever. has_color() tells a color
picture from a gray or toned one saved as RGB (a colorize queue asks it of
each input).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import mmap
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

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
    deep: np.ndarray | None = None  # a 16-bit input's own samples, upright: (H, W) gray or (H, W, 3) RGB
                                    # uint16; None for 8-bit inputs (module docstring)
    deep_alpha: np.ndarray | None = None   # with deep, its alpha: (H, W) uint16, or None where it has none
    pages: tuple[int, ...] = ()   # a multi-page TIFF's pages, for open_image(page=...); () for one page


def open_image(path: str | Path, max_pixels: int | None = None, page: int = 0) -> Plain:
    """Open, check the size before decoding, decode fully and normalise one image file; page: which of a
    multi-page TIFF's pages (an index into Plain.pages' numbering: the file's IFDs), else the first frame."""
    try:
        with Image.open(path) as im:
            _check_size(im.size, max_pixels)
            pages = tiff_pages(path) if im.format == "TIFF" and getattr(im, "n_frames", 1) > 1 else ()
            if page or getattr(im, "n_frames", 1) > 1:
                im.seek(page)  # animated GIF/WebP: the first frame; a TIFF: the page asked for
                _check_size(im.size, max_pixels)
            if _is_png16(im):   # asked before load(), which lets go of the rawmode that says so
                decoded = _png16(im, path)
                if decoded is not None:
                    return plain(*decoded)
            im.load()
            p = plain(im, _tiff16(im, path, page))
            p.pages = pages
            return p
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        alone = _tiff_alone(path, max_pixels, page)
        if alone is None:
            raise ImageError(f"cannot decode image: {e}") from e
        return alone
    except EOFError as e:
        raise ImageError(f"cannot decode image: it has no page {page + 1}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image: {e}") from e


def tiff_pages(source) -> tuple[int, ...]:
    """A multi-page TIFF's pages, as the indices of its image directories, without the reduced-resolution
    copies (thumbnails, previews: NewSubfileType bit 0) a scanner may add; () when it has one page or
    tifffile cannot read its directories."""
    import tifffile   # only for these files

    try:
        if hasattr(source, "seek"):
            source.seek(0)
        with tifffile.TiffFile(source) as tif:
            pages = tuple(i for i, p in enumerate(tif.pages) if not int(p.tags.valueof(254, 0)) & 1)
    except Exception:
        return ()
    return pages if len(pages) > 1 else ()


def _check_size(size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f}; raise limits.max_pixels if this image is wanted"
        )


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


def _tiff_alone(source, max_pixels: int | None, index: int = 0) -> Plain | None:
    """A TIFF that Pillow cannot open, read by tifffile: 8- or 16-bit gray or RGB, with an alpha band or
    not, by any compression tifffile decodes; None for what is not a TIFF (the caller's error stands).

    The size is checked from the page's header before its pixels are decoded.
    An associated (premultiplied) alpha is divided out, as Pillow does for an
    RGBa TIFF; an extra band not said to be alpha is left out, as Pillow
    leaves it. The orientation tag is honoured as exif_transpose would.
    """
    if not _is_tiff_file(source):
        return None
    import tifffile   # only for these files

    try:
        with tifffile.TiffFile(source) as tif:
            if index and index >= len(tif.pages):
                raise ImageError(f"cannot decode image: it has no page {index + 1}")
            page = tif.pages[index]   # IndexError for a TIFF with no page it can read: the error below
            mode = _alone_mode(page)
            _check_size((page.imagewidth, page.imagelength), max_pixels)
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
    p = plain(im, samples)
    p.pages = tiff_pages(source)
    return p


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
    """For a TIFF Pillow cannot open that _tiff_alone reads: (width, height, its mode as Pillow would
    name it, whether its samples are 16-bit), from the header; None otherwise."""
    if not _is_tiff_file(source):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(source) as tif:
            page = tif.pages[0]
            return page.imagewidth, page.imagelength, _alone_mode(page), page.dtype == np.uint16
    except Exception:
        return None


def _is_tiff_file(source) -> bool:
    if hasattr(source, "seek"):
        source.seek(0)
        head = source.read(4)
        source.seek(0)
    else:
        with open(source, "rb") as f:
            head = f.read(4)
    return head in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")   # classic and BigTIFF, either byte order


def _photometric(page) -> int:
    """The page's photometric interpretation as tifffile decodes it: JPEG's YCbCr comes out RGB (2)."""
    photometric = int(page.photometric)
    return 2 if photometric == 6 and int(page.compression) in (7, 34892) else photometric


def _alone_mode(page) -> str:
    """The mode of what _tiff_alone makes of a tifffile page (L, LA, RGB, RGBA), or ImageError."""
    photometric, bands = _photometric(page), page.samplesperpixel
    alpha = tuple(page.extrasamples or ())[:1] in ((1,), (2,))
    if page.dtype in (np.uint8, np.uint16) and photometric in (0, 1) and bands in (1, 2):
        return "LA" if bands == 2 and alpha else "L"
    if page.dtype in (np.uint8, np.uint16) and photometric == 2 and bands in (3, 4):
        return "RGBA" if bands == 4 and alpha else "RGB"
    raise ImageError(f"cannot decode image: a TIFF of {bands} {page.dtype} samples a pixel, photometric "
                     f"{photometric}, is not read here (8- or 16-bit gray or RGB, with alpha or not)")


# TIFF/EXIF orientation -> how exif_transpose turns an image, for (H, W[, C]) samples (views, no copies).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def _gray16(im: Image.Image) -> np.ndarray | None:
    """A 16-bit gray image's samples as (H, W) uint16: I;16 modes, and I whose values fit 16 bits (not 8)."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16, copy=False)   # I;16B is big-endian: native order here
    if im.mode == "I" and im.width and im.height:
        lo, hi = im.getextrema()
        if 0 <= lo and 255 < hi <= 65535:
            return np.asarray(im).astype(np.uint16)
    return None


def is_deep(im: Image.Image) -> bool:
    """Whether an opened (not yet decoded) image has 16-bit samples that plain() may keep (Plain.deep)."""
    return (im.mode.startswith("I;16") or im.mode == "I"
            or _is_tiff16(im) and (_codecs() is not None or _tiff_compression(im) in PLAIN_TIFF)
            or _is_png16(im) and _codecs() is not None)


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


def _is_png16(im: Image.Image) -> bool:
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


def _png16(im: Image.Image, source) -> tuple[Image.Image, np.ndarray] | None:
    """A 16-bit color or alpha PNG (_is_png16) decoded once, by libpng: its 8-bit copy, and its samples
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


def _tiff16(im: Image.Image, source, index: int = 0) -> np.ndarray | None:
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
