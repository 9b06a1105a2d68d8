"""A TIFF's chain of image directories (IFDs), walked once: its pages' offsets, a loop or too many pages
refused; and one page read as if it were the file's first, so that no page is found by walking the
chain again.

A TIFF's pages are a linked list: the header points to the first IFD, each
IFD to the next. Pillow and tifffile walk it from the start each time a page
is asked for (60,000 pages: quadratic), and tifffile's iteration over a chain
that loops back never ends. This reads the header and each IFD's entries only
(never the pixels), stops at a loop with the reason, and at max_pages pages.
tifffile offers no such walk: it logs a loop and cuts the chain silently.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from .imageerror import ImageError

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")   # classic and BigTIFF, either byte order


def is_tiff(head: bytes) -> bool:
    return head[:4] in TIFF_MAGIC


def is_tiff_source(source) -> bool:
    """Whether a path or a seekable file starts as a TIFF (a file is left at its start)."""
    if hasattr(source, "seek"):
        source.seek(0)
        head = source.read(4)
        source.seek(0)
    else:
        with open(source, "rb") as f:
            head = f.read(4)
    return is_tiff(head)


def page_offsets(source, max_pages: int | None = None) -> tuple[int, ...]:
    """The offsets of a TIFF's pages' IFDs, in order: the first, and those after it that are not
    reduced-resolution copies (previews: NewSubfileType bit 0) a scanner may add; ImageError where the chain loops back or holds more than
    max_pages pages. A pointer past the end of the file ends the chain (what was read stands)."""
    with _opened(source) as f:
        head = f.read(16)
        if not is_tiff(head):
            return ()
        order = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\0", b"\0+")
        count_f, entry, off_f = ("Q", 20, "Q") if big else ("H", 12, "I")
        nxt = struct.unpack_from(order + off_f, head, 8 if big else 4)[0]
        seen: set[int] = set()
        pages: list[int] = []
        while nxt:
            if nxt in seen:
                raise ImageError(f"cannot decode image: its chain of pages loops back (after page {len(pages)}, "
                                 f"to the directory at byte {nxt}): a damaged or hostile TIFF")
            if max_pages is not None and (len(pages) > max_pages or len(seen) > 2 * max_pages):
                raise _too_many(max_pages)   # previews count too: a chain of them is as long to walk
            seen.add(nxt)
            f.seek(nxt)
            raw = f.read(struct.calcsize(count_f))
            if len(raw) < struct.calcsize(count_f):
                break
            n = struct.unpack(order + count_f, raw)[0]
            entries = f.read(n * entry + struct.calcsize(off_f))
            if len(entries) < n * entry + struct.calcsize(off_f):
                break
            if not pages or not _reduced(entries, n, entry, order, big):   # the first is a page, always
                pages.append(nxt)
            nxt = struct.unpack_from(order + off_f, entries, n * entry)[0]
    if max_pages is not None and len(pages) > max_pages:
        raise _too_many(max_pages)
    return tuple(pages)


def _too_many(max_pages: int) -> ImageError:
    return ImageError(f"the TIFF has more than {max_pages} pages, over the limit; raise [limits] max_pages "
                      "if it is wanted")


def _reduced(entries: bytes, n: int, entry: int, order: str, big: bool) -> bool:
    """Whether an IFD's NewSubfileType (tag 254) says it is a reduced-resolution copy (bit 0)."""
    for i in range(n):
        tag, kind = struct.unpack_from(order + "HH", entries, i * entry)
        if tag == 254:
            value = entries[i * entry + (12 if big else 8):]
            return bool(struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0] & 1)
        if tag > 254:
            return False   # entries are sorted by tag
    return False


class _opened:
    """source (a path, or a file object such as BytesIO) to read from, closed after only if opened here."""

    def __init__(self, source):
        self.source, self.f = source, None

    def __enter__(self):
        if isinstance(source := self.source, (str, Path)):
            self.f = open(source, "rb")
            return self.f
        source.seek(0)
        return source

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()
        else:
            self.source.seek(0)


class FromPage(io.RawIOBase):
    """A TIFF's bytes read as if the IFD at `offset` were its first: the header's first-IFD pointer is
    changed in what is read, nothing is copied. Pillow and tifffile then open that page in one step."""

    def __init__(self, data: bytes, offset: int, name: str = ""):
        super().__init__()
        self._data = memoryview(data)
        order = "<" if bytes(data[:2]) == b"II" else ">"
        big = bytes(data[2:4]) in (b"+\0", b"\0+")
        head = bytearray(data[:16 if big else 8])
        struct.pack_into(order + ("Q" if big else "I"), head, 8 if big else 4, offset)
        self._head = bytes(head)
        self._pos = 0
        self.shown = name

    def __repr__(self) -> str:
        return repr(self.shown)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n is None or n < 0 else min(len(self._data), self._pos + n)
        start, self._pos = self._pos, max(self._pos, end)
        if start >= end:
            return b""
        if start >= len(self._head):
            return bytes(self._data[start:end])
        return self._head[start:end] + bytes(self._data[len(self._head):end])

    def readinto(self, b) -> int:
        got = self.read(len(b))
        b[:len(got)] = got
        return len(got)
