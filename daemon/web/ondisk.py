"""The web's names and files on disk, never a path from a request: the inbox name an upload gets, and a file
the service wrote opened without following links, only while it is the file recorded (what files.FileIndex
hands the routes and thumbs.py)."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..core.fs import numbered
from ..core.names import IMAGE_EXTS, NAME_MAX, input_name, name_bytes

_UNSAFE = re.compile(r"[^\w.-]+")                 # anything but letters, digits, _ . -
_NUMBERED_BEFORE = re.compile(r"^(.+_before)-\d+$", re.IGNORECASE)   # x_before-1 (failed/, done/ numbering)
_BEFORE = "_before"


class Refused(Exception):
    """A request the file index cannot do; status is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def upload_name(filename: str) -> str:
    """The inbox name of an uploaded file: its base name with every character but letters, digits, '_', '.'
    and '-' made '_', no leading dot, then core.names.input_name's rule, as for a file dropped into the
    inbox ('Scan 3.JPG' -> 'Scan_3_before.JPG'). Refused (415) when the extension is not an image's."""
    base = re.split(r"[/\\]", filename or "")[-1]          # some browsers send a path
    stem, dot, ext = _UNSAFE.sub("_", base).rpartition(".")
    stem, ext = stem.lstrip("._-"), dot + ext
    if ext.lower() not in IMAGE_EXTS:
        raise Refused(415, f"{filename!r} is not an image file name: the inbox takes "
                           f"{', '.join(sorted(IMAGE_EXTS))}")
    numbered_before = _NUMBERED_BEFORE.match(stem)
    stem = numbered_before.group(1) if numbered_before else (stem or "upload")
    return input_name(stem + ext)   # the inbox's own rule: NAME_before.EXT, fitted to the name limit


def inbox_names(name: str):
    """NAME_before.EXT, NAME-1_before.EXT, ...: numbered as the outbox numbers, before '_before', so that each
    stays an input name; each fits the file-name limit."""
    stem, ext = os.path.splitext(name)
    stem = stem[:-len(_BEFORE)]
    tail = _BEFORE + ext
    for s in numbered(stem, split_ext=False, limit=NAME_MAX - name_bytes(tail)):
        yield s + tail


@dataclass(frozen=True)
class Opened:
    """A file the service wrote, opened without following links: read it, then close fd."""

    fd: int
    size: int
    name: str
    mtime: float


def ident(path: Path | None) -> list[int] | None:
    """[device, inode, size, mtime in ns] of a regular file the service wrote, to know it again (None: none
    there); the time too, as a file deleted gives its inode to the next file made, often of the same size."""
    try:
        st = os.lstat(path) if path is not None else None
    except OSError:
        return None
    return _ident(st) if st is not None and stat.S_ISREG(st.st_mode) else None


def _ident(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def open_written(folder: Path, name: str | None, expect: list[int] | None = None) -> Opened | None:
    """folder/name when name is a plain name and the file a regular file (never through a link), and the file
    expect (its ident(), when known) says: another file under the name since is None, as a gone one is."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        return None
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # gone, or a link planted under the name (ELOOP)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (expect and _ident(st)[:len(expect)] != list(expect)):
        os.close(fd)
        return None
    return Opened(fd, st.st_size, name, st.st_mtime)


def read_reason(path: Path) -> str:
    """The 'what went wrong' line of a reason note (quarantine.reason_text), or the note's first line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no reason note beside it"
    for line in text.splitlines():
        if line.startswith("what went wrong:"):
            return line.partition(":")[2].strip()
    return text.strip().splitlines()[0] if text.strip() else "no reason given"
