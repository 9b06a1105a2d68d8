"""Logging to the systemd journal through stderr: priorities by prefix, no timestamps, no colors, no storms.

Under systemd, stderr is a stream into journald, which stamps each line with
its own time and reads a "<N>" syslog priority prefix at the start of a line
(sd-daemon(3)): so lines here carry "<3>" for errors, "<4>" for warnings and
so on, and neither a time nor ANSI colors. Each line of a multi-line message
gets the prefix, or journald would file the rest at the default priority.

A failure is one line with its reason ("...: OSError: [Errno 28] No space left
on device"), not a traceback; the traceback follows, at debug priority, only
when the log level is DEBUG. The same warning repeated within a minute is
written once, then counted.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO

# loguru level -> syslog priority (sd-daemon(3): SD_ERR is 3, SD_WARNING 4, SD_NOTICE 5, SD_INFO 6, SD_DEBUG 7)
PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
REPEAT_WINDOW = 60.0  # seconds during which an identical warning or error is counted, not written


def under_journald(stream: TextIO | None = None) -> bool:
    """True when stream (stderr by default) is the journal stream systemd set up (JOURNAL_STREAM=dev:inode).

    Comparing the device and inode, as systemd.exec(5) advises, tells a service's
    own stderr from one redirected elsewhere by a child or a wrapper script.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return bool(value) and st.st_dev == int(dev) and st.st_ino == int(ino)
    except (ValueError, OSError, AttributeError):
        return False


def priority(level_name: str, level_no: int = 20) -> int:
    """The syslog priority for a loguru level; custom levels by their number."""
    if level_name in PRIORITY:
        return PRIORITY[level_name]
    return 3 if level_no >= 40 else 4 if level_no >= 30 else 6 if level_no >= 20 else 7


class Repeats:
    """Lets the first of identical warnings or errors through, counts the rest for REPEAT_WINDOW seconds."""

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._seen: dict[tuple, list] = {}  # key -> [first time written, repeats since]

    def __call__(self, record) -> tuple[bool, int]:
        """(write it?, how many identical ones were held back before it)."""
        if record["level"].no < 30:
            return True, 0
        exc = record["exception"]
        key = (record["level"].name, record["message"], exc.type if exc else None)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            seen[1] += 1
            return False, 0
        held = seen[1] if seen else 0
        self._seen[key] = [now, 0]
        if len(self._seen) > 1000:  # forget old keys; a flood of distinct messages must not grow this forever
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
        return True, held


def journal_text(record, verbose: bool = False, held: int = 0,
                 json_line: Callable[[dict], str] | None = None) -> str:
    """The lines for one record: '<N>message' (or '<N>{json}'), the exception's reason on the same line."""
    prio = priority(record["level"].name, record["level"].no)
    exc = record["exception"]
    if json_line is not None:
        text = json_line(record)  # already one line, with the exception's reason inside
    else:
        text = record["message"]
        if exc is not None and exc.type is not None:
            reason = f"{exc.type.__name__}: {exc.value}"
            if str(exc.value) not in text or not str(exc.value):
                text = f"{text}: {reason}"
    if held:
        text += f" (and {held} more like it in the last {REPEAT_WINDOW:.0f} s)"
    lines = [f"<{prio}>{line}" for line in (text.splitlines() or [""])]
    if verbose and exc is not None and exc.type is not None:
        lines += [f"<7>{line}" for chunk in traceback.format_exception(exc.type, exc.value, exc.traceback)
                  for line in chunk.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def journal_sink(stream: TextIO | None = None, verbose: bool = False,
                 json_line: Callable[[dict], str] | None = None) -> Callable:
    """A loguru sink writing journal_text() lines to stream; pass it to logger.add(sink, level=...)."""
    repeats = Repeats()

    def sink(message) -> None:
        out = stream or sys.stderr
        write, held = repeats(message.record)
        if write:
            out.write(journal_text(message.record, verbose, held, json_line))
            out.flush()

    return sink
