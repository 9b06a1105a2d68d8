"""File names as bytes: their length on disk, cutting one short to fit, and printing one safely.

Names are bytes on Linux, not always UTF-8 and free to hold control
characters. They travel as Python's str with surrogate escapes (os.fsdecode),
and lengths are counted in bytes; shown() is how one is printed, in a log or
a note, without raw bytes or escape sequences, and near() how a path is. No torch here: ops/ prints names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME_MAX = 255   # bytes in one file name, on every filesystem Linux mounts for this
# C0 controls, DEL, C1 controls (a terminal obeys ESC and CSI) and lone surrogates (bytes that are not UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def name_bytes(name: str) -> int:
    """The length of a name on disk, in bytes (what NAME_MAX limits)."""
    return len(os.fsencode(name))


def fitted(stem: str, tail: str = "", limit: int = NAME_MAX) -> str:
    """stem + tail, the stem cut short (never the tail: a number, a suffix, the extension) to fit limit bytes."""
    room = limit - name_bytes(tail)
    if room < 1:
        raise ValueError(f"{tail!r} alone does not fit in a file name of {limit} bytes")
    while name_bytes(stem) > room:
        stem = stem[:-1]  # whole characters: a UTF-8 sequence is never cut in half
    return stem + tail


def shown(text, keep: str = "") -> str:
    """text (a name or a message) printable as it is: bytes that are not UTF-8 as \\xNN, control characters
    (ESC above all) as \\xNN too, except those in keep; so a log line never carries raw bytes or escapes."""
    def escape(m: re.Match) -> str:
        c = m.group()
        if c in keep:
            return c
        n = ord(c)
        return f"\\x{n - 0xdc00:02x}" if 0xdc80 <= n <= 0xdcff else f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"
    return _UNPRINTABLE.sub(escape, os.fsdecode(text) if isinstance(text, bytes) else str(text))


def near(path, config_file=None) -> str:
    """A path as a user reads it in the log: relative to the config's folder when inside it, as the config
    names its folders (inbox/colorize, not /srv/reverser/inbox/colorize); else as it is."""
    base = Path(config_file).parent.resolve() if config_file else Path.cwd()
    try:
        return str(Path(path).resolve().relative_to(base))
    except (ValueError, OSError):
        return str(path)
