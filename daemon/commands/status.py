"""reverser status [--json]: print the running service's status (no torch is loaded for this)."""

from __future__ import annotations

import json
import sys

from ..core.config import load_config
from ..ops.status import NOT_RUNNING, STATUS_FILE, liveness, read_status, render


def main(args) -> int:
    """reverser status [--json]: print the running service's status; exit 3 when none runs."""
    cfg = load_config(args.config)
    path = cfg.paths.state / STATUS_FILE
    try:
        doc = read_status(cfg.paths.state)
    except FileNotFoundError:
        print(f"reverser: not running here: no status file at {path}. Start the service with "
              f"`reverser run --config {cfg.file}`.", file=sys.stderr)
        return NOT_RUNNING
    except (OSError, json.JSONDecodeError) as e:
        print(f"reverser: cannot read {path}: {e}", file=sys.stderr)
        return NOT_RUNNING
    running, why = liveness(doc)
    if args.json:
        print(json.dumps(doc, indent=2))
        if not running:
            print(f"reverser: {why}", file=sys.stderr)
    else:
        print(render(doc, running, why))
    return 0 if running else NOT_RUNNING
