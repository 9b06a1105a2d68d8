"""reverser run: the service in the foreground (daemon/service.py keeps its life cycle)."""

from __future__ import annotations

import os
import sys

from loguru import logger

from ..core import memory
from ..core.config import load_config
from ..ops.logs import setup_logging
from ..preflight import require_valid
from ..service import Service


def main(args) -> int:
    memory.share_arenas()   # before the service's threads start: freed image memory is reused across them
    cfg = load_config(args.config)
    # The checks of `reverser check`: a bad config exits 78 before anything starts (a broken
    # champion is no reason to stop when an earlier model loads: load_serving falls back to it).
    require_valid(cfg, fallback=True)
    setup_logging(cfg.logging, getattr(args, "log_json", False))
    service = Service(cfg, getattr(args, "log_json", False))
    code = service.run()
    if service.unfinished:
        # The drain time ran out with a forward pass still running: leave without
        # waiting for it (its files are in work/ for the next start).
        logger.complete()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    logger.complete()
    return code
