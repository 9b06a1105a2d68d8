"""The reverser command line: run, convert, train, status, models, check (one module each, beside this one).

Exit codes (daemon/errors.py) follow sysexits: 0 ok, 64 usage, 65 bad input
data, 70 internal error, 78 bad configuration. A command's module is imported
only when it runs, so `reverser status` never loads torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import EX_CONFIG, EX_OK, EX_USAGE, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2; sysexits says usage is 64
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="reverser", description="Colorize black-and-white images (and the reverse) from watched folders.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name, help):
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("--config", type=Path, default=Path("config.toml"),
                       help="the configuration file (default: ./config.toml)")
        return c

    c = cmd("run", "run the service in the foreground: watch the inboxes, convert, retrain nightly")
    c.add_argument("--log-json", action="store_true", help="log one JSON object per line")

    c = cmd("convert", "convert files or folders once, through the same pipeline as the service")
    c.add_argument("--queue", help="which queue's model to use (default: the first in the config)")
    c.add_argument("-o", "--output", type=Path, help="write results here (default: beside each input)")
    c.add_argument("--color-inputs", choices=("keep", "recolor", "fail"),
                   help="colorize: what becomes of an input that has color already (default: the queue's "
                        "color_inputs in the config)")
    c.add_argument("--hints", type=Path, metavar="FILE",
                   help="colorize: color points (a hints JSON or stroke PNG) for the one input given; without it, "
                        "X_hints.json or X_hints.png beside an input X is taken")
    c.add_argument("--skip-existing", action="store_true",
                   help="leave out inputs whose result (NAME_after.EXT) is there already: run again on a folder, "
                        "only what is new is converted")
    c.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders of them")

    c = cmd("train", "train a queue's model now, in the foreground, with the nightly job's promotion rule")
    c.add_argument("--queue", required=True)
    c.add_argument("--pairs", type=Path, action="append", default=[],
                   help="a folder of NAME_before/NAME_after pairs (repeatable; default: the queue's accumulated pairs)")
    c.add_argument("--swap", action="store_true",
                   help="the --pairs folders hold the opposite direction: train NAME_after -> NAME_before "
                        "(a reverse model from colorization pairs)")
    c.add_argument("--minutes", type=float, help="time budget")
    c.add_argument("--epochs", type=int, help="epoch budget; 0 scores and calibrates the starting model without training")
    c.add_argument("--val-percent", type=float,
                   help="share of the pairs held out (by name) to choose and calibrate the model "
                        "(default: [retrain] val_percent)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the run (default: 0)")
    c.add_argument("--out", type=Path, help="write the trained model folder here instead of the registry")
    c.add_argument("--from-scratch", action="store_true", help="start from a new network, not the champion")
    c.add_argument("--no-promote", action="store_true", help="register the result but never promote it")
    c.add_argument("--force", action="store_true", help="promote the result whatever its scores")

    c = cmd("status", "print the running service's status")
    c.add_argument("--json", action="store_true", help="print status.json as it is")

    c = cmd("models", "list, promote or roll back a queue's model versions")
    c.add_argument("--queue", help="the queue (required; before or after the verb)")
    msub = c.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def verb(name, help):   # --queue and --config are taken after the verb too: `models list --queue q`
        v = msub.add_parser(name, help=help, description=help)
        v.add_argument("--queue", default=argparse.SUPPRESS)
        v.add_argument("--config", type=Path, default=argparse.SUPPRESS)
        return v

    verb("list", "versions, scores and which one is the champion")
    verb("promote", "make VERSION the champion").add_argument("version", type=int)
    verb("rollback", "make the champion's parent the champion again")

    cmd("check", "validate the configuration and every model without starting anything; exit 78 if bad")
    return p


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    args = build_parser().parse_args(argv)
    args.began = began  # before the command's imports (torch takes seconds): reverser train's --minutes count from it
    from ..core.config import ConfigError
    from ..ops.logs import print_names_safely

    print_names_safely()  # file names in log lines: no raw bytes, no escape sequences

    try:
        if args.command == "run":
            from .run import main as run
        elif args.command == "convert":
            from .convert import main as run
        elif args.command == "train":
            from .train import main as run
        elif args.command == "status":
            from .status import main as run
        elif args.command == "models":
            from .models import main as run
        else:
            from .check import main as run
        code = run(args)
        sys.stdout.flush()   # here, where a reader that has gone is caught (below), not at exit
        return code
    except ConfigError as e:
        print(f"reverser: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    except UsageError as e:
        print(f"reverser: {e}", file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `reverser models list | head`: the reader has gone, which is no fault
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing more to flush at exit
        return EX_OK
