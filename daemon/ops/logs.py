"""Logging set-up: loguru, readable on a terminal, one JSON object per line when asked, optional rotating file.

Fields bound with logger.bind(queue=..., file=...) travel as extra keys, so
JSON lines can be filtered by queue or file without parsing the message.

File names are bytes on Linux and may hold anything but '/' and NUL: every
record's message and fields pass through namebytes.shown() (print_names_safely),
so no sink meets bytes that are not UTF-8 and no terminal obeys an escape
sequence out of a name; the log file writes what still cannot be encoded (a
traceback's text) as backslash escapes instead of dropping the line.

A stream that is gone (closed, or a pipe whose reader hung up) drops its lines
quietly: no traceback per line, and the service carries on. The same warning
or error within a minute is written once, then counted (Folded), whichever
sinks are in use.
"""

from __future__ import annotations

import errno
import json
import sys
import threading
from typing import TextIO

from loguru import logger

from ..core.config import LoggingConfig
from ..core.namebytes import shown
from .journal import REPEAT_WINDOW, Repeats, journal_sink, under_journald

HUMAN = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"


def json_line(record) -> str:
    """One compact JSON object: time, level, message, and any bound fields."""
    entry = {"time": record["time"].isoformat(timespec="milliseconds"), "level": record["level"].name,
             "message": record["message"],
             **{k: _plain(v) for k, v in record["extra"].items() if not k.startswith("_")}}
    if record["exception"] is not None:
        exc = record["exception"]
        entry["exception"] = shown(f"{exc.type.__name__}: {exc.value}") if exc.type else None
    return json.dumps(entry, ensure_ascii=False)


def _plain(v):
    return v if isinstance(v, (str, int, float, bool, type(None))) else shown(v)


def _printable(record) -> None:
    """loguru patcher: the message (its line breaks and tabs kept) and the bound fields, printable."""
    record["message"] = shown(record["message"], keep="\n\t")
    extra = record["extra"]
    for k, v in extra.items():
        if isinstance(v, str):
            extra[k] = shown(v)


def print_names_safely() -> None:
    """Make every log record printable (see the module docstring); setup_logging does it too."""
    logger.configure(patcher=_printable)


class Folded:
    """A loguru filter shared by every sink: journal.Repeats' rule (the same warning or error within a
    minute is written once, then counted) for the terminal, JSON and file sinks too, so a flood (accept()
    failing for want of file handles, a client hammering) is a line a minute wherever the log goes."""

    def __init__(self):
        self._repeats = Repeats()
        self._lock = threading.Lock()

    def __call__(self, record) -> bool:
        extra = record["extra"]
        if "file" in extra:   # a file's own line (its failure, told again at each retry) is always written
            return True
        if "_shown" not in extra:     # asked once per record; the next sinks get the same answer
            with self._lock:
                write, held = self._repeats(record)
            if write and held:
                record["message"] += f" (and {held} more like it in the last {REPEAT_WINDOW:.0f} s)"
            extra["_shown"] = write
        return extra["_shown"]


def _json_file_line(record) -> str:
    # A format function's result is parsed by loguru for {fields} and <color> tags: hand it the line as a
    # field, so a message holding "<queue>" or "{" is written as it is.
    record["extra"]["_json_line"] = json_line(record)
    return "{extra[_json_line]}\n"


def _gone(stream: TextIO, e: Exception) -> bool:
    """Whether e says stream is gone for good: closed by its owner, or its reader hung up (`| head`)."""
    if isinstance(e, BrokenPipeError) or (isinstance(e, OSError) and e.errno == errno.EPIPE):
        return True
    return isinstance(e, ValueError) and (getattr(stream, "closed", False) or "closed file" in str(e))


def _quietly(sink, stream: TextIO):
    """sink, dropping the line where stream is gone: loguru would print a traceback for each line into
    stderr (often that very stream), and a log no one can read is no reason to disturb the service."""
    def write(message) -> None:
        try:
            sink(message)
        except (ValueError, OSError) as e:
            if not _gone(stream, e):
                raise
    return write


def _writer(stream: TextIO, bars: bool):
    """text -> stream, flushed; with bars, written above the progress bars on stream (tqdm clears them and
    draws them again below), so a terminal shows whole log lines over one bar, never a line cut by one."""
    if bars:
        from tqdm import tqdm

        def write(text: str) -> None:
            tqdm.write(text, file=stream, end="")
            stream.flush()
    else:
        def write(text: str) -> None:
            stream.write(text)
            stream.flush()
    return write


def setup_logging(cfg: LoggingConfig, json_lines: bool | None = None, stream: TextIO | None = None,
                  bars: bool = False) -> None:
    """Replace loguru's sinks with ours: stream (stderr by default), and cfg.file when set.

    bars: a command draws tqdm progress bars on stream; log lines are written through them.
    """
    stream = stream or sys.stderr
    print_names_safely()
    repeats = Folded()
    as_json = cfg.json if json_lines is None else (json_lines or cfg.json)
    logger.remove()
    if under_journald(stream):
        # Under systemd: <N> priority prefixes, no timestamps or colors (journald adds its own).
        sink = journal_sink(stream, verbose=cfg.level == "DEBUG", json_line=json_line if as_json else None)
        logger.add(_quietly(sink, stream), level=cfg.level, backtrace=False, diagnose=False, filter=repeats)
    elif as_json:
        # A function sink, not serialize=True: loguru's own JSON nests the record two levels deep.
        write = _writer(stream, bars)
        logger.add(_quietly(lambda message: write(json_line(message.record) + "\n"), stream), level=cfg.level,
                   backtrace=False, diagnose=False, filter=repeats)
    else:
        write = _writer(stream, bars)
        logger.add(_quietly(lambda message: write(str(message)), stream), level=cfg.level, format=HUMAN,
                   colorize=_isatty(stream), backtrace=False, diagnose=False, filter=repeats)
    if cfg.file is not None:
        cfg.file.parent.mkdir(parents=True, exist_ok=True)
        fmt = _json_file_line if as_json else HUMAN
        # enqueue: the file sink writes from its own thread, so a slow disk never holds up a worker.
        logger.add(cfg.file, level=cfg.level, format=fmt, rotation=cfg.rotation, retention=cfg.retention,
                   enqueue=True, backtrace=False, diagnose=False, colorize=False, errors="backslashreplace",
                   filter=repeats)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
