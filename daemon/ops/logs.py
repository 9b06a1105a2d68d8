"""Logging set-up: loguru, readable on a terminal, one JSON object per line when asked, optional rotating file.

Fields bound with logger.bind(queue=..., file=...) travel as extra keys, so
JSON lines can be filtered by queue or file without parsing the message.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from loguru import logger

from ..core.config import LoggingConfig
from .journal import journal_sink, under_journald

HUMAN = "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"


def json_line(record) -> str:
    """One compact JSON object: time, level, message, and any bound fields."""
    entry = {"time": record["time"].isoformat(timespec="milliseconds"), "level": record["level"].name,
             "message": record["message"], **{k: _plain(v) for k, v in record["extra"].items()}}
    if record["exception"] is not None:
        exc = record["exception"]
        entry["exception"] = f"{exc.type.__name__}: {exc.value}" if exc.type else None
    return json.dumps(entry, ensure_ascii=False)


def _plain(v):
    return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)


def setup_logging(cfg: LoggingConfig, json_lines: bool | None = None, stream: TextIO | None = None) -> None:
    """Replace loguru's sinks with ours: stream (stderr by default), and cfg.file when set."""
    stream = stream or sys.stderr
    as_json = cfg.json if json_lines is None else (json_lines or cfg.json)
    logger.remove()
    if under_journald(stream):
        # Under systemd: <N> priority prefixes, no timestamps or colors (journald adds its own).
        logger.add(journal_sink(stream, verbose=cfg.level == "DEBUG", json_line=json_line if as_json else None),
                   level=cfg.level, backtrace=False, diagnose=False)
    elif as_json:
        # A function sink, not serialize=True: loguru's own JSON nests the record two levels deep.
        def sink(message, stream=stream):
            stream.write(json_line(message.record) + "\n")
            stream.flush()

        logger.add(sink, level=cfg.level, backtrace=False, diagnose=False)
    else:
        logger.add(stream, level=cfg.level, format=HUMAN, colorize=_isatty(stream),
                   backtrace=False, diagnose=False)
    if cfg.file is not None:
        cfg.file.parent.mkdir(parents=True, exist_ok=True)
        fmt = (lambda r: json_line(r).replace("{", "{{").replace("}", "}}") + "\n") if as_json else HUMAN
        # enqueue: the file sink writes from its own thread, so a slow disk never holds up a worker.
        logger.add(cfg.file, level=cfg.level, format=fmt, rotation=cfg.rotation, retention=cfg.retention,
                   enqueue=True, backtrace=False, diagnose=False, colorize=False)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
