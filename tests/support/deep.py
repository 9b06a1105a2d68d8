"""16-bit test pictures, and reading a result back at its full depth (Pillow reads a 16-bit color PNG at 8)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

LUMA = np.array([0.299, 0.587, 0.114])


def gray16(size=(96, 64), seed=0) -> np.ndarray:
    """(H, W) uint16: a smooth ramp kept off the ends plus a fine ripple, so most values fall between 8-bit steps."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = 9000 + 46000 * (xx + yy) / max(1, w + h - 2)
    ripple = np.random.default_rng(seed).integers(0, 200, (h, w))
    return (ramp + ripple).astype(np.uint16)


def color16(size=(96, 64), seed=0) -> np.ndarray:
    """(H, W, 3) uint16: a 16-bit color picture (red across, blue down, each channel its own ripple)."""
    w, h = size
    g = gray16(size, seed).astype(np.int64)
    yy, xx = np.mgrid[0:h, 0:w]
    red, blue = 12000 * xx / max(1, w - 1), 12000 * yy / max(1, h - 1)
    return np.stack([g + red - 6000, g + np.asarray(gray16(size, seed + 1), np.int64) // 9 - 3000,
                     g + blue - 6000], -1).clip(0, 65535).astype(np.uint16)


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png16(rgb: np.ndarray, interlace: bool = False, chunks: tuple[tuple[bytes, bytes], ...] = (),
          after: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """(H, W, 3) uint16 as a 16-bit RGB PNG, Adam7-interlaced if asked (Pillow writes no 16-bit color),
    with chunks (kind, data) before its pixels and after them."""
    h, w = rgb.shape[:2]
    # Interlaced, the rows of seven passes over sub-grids follow one another (no filter: type 0).
    passes = [rgb[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7] if interlace else [rgb]
    raw = b"".join(b"\0" + row.astype(">u2").tobytes() for p in passes if p.size for row in p)
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, int(interlace)))]
    out += [_chunk(kind, data) for kind, data in chunks]
    raw = zlib.compress(raw)
    idat = [_chunk(b"IDAT", raw[i: i + 8192]) for i in range(0, len(raw), 8192)]   # as encoders split it
    return b"".join(out + idat + [_chunk(kind, data) for kind, data in after] + [_chunk(b"IEND", b"")])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def luminance16(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) 16-bit samples -> their BT.601 luminance, as float."""
    return rgb.astype(np.float64) @ LUMA


def read_deep(path: Path) -> np.ndarray:
    """A PNG or TIFF's samples as stored: uint16 (H, W) or (H, W, 2 to 4) for a 16-bit file."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return tifffile.imread(path)
    return _read_png(path.read_bytes())


def _read_png(data: bytes) -> np.ndarray:
    """A plain PNG decoder (gray or RGB, with alpha or not, 8 or 16 bits, not interlaced, every filter type),
    for tests only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0], kind
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = head
    assert ctype in (0, 2, 4, 6) and depth in (8, 16) and not interlace, head
    bands = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = bands * depth // 8
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, 1 + w * bpp)
    out = np.zeros((h, w * bpp), dtype=np.int64)
    prev = np.zeros(w * bpp, dtype=np.int64)
    for r in range(h):
        kind, line = raw[r, 0], raw[r, 1:].astype(np.int64)
        if kind == 2:
            line = (line + prev) % 256
        elif kind in (1, 3, 4):
            line = line.copy()
            for i in range(w * bpp):
                a = line[i - bpp] if i >= bpp else 0
                c = prev[i - bpp] if i >= bpp else 0
                b = prev[i]
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) % 256
        out[r] = prev = line
    samples = out.astype(np.uint8).reshape(h, w * bpp)
    if depth == 16:
        samples = samples.view(">u2").astype(np.uint16)
    return samples.reshape(h, w, bands) if bands > 1 else samples.reshape(h, w)
