"""reverser train: the retraining job now, in the foreground, with a progress bar.

    reverser train --queue Q [--pairs DIR]... [--minutes M] [--epochs N]
                   [--out DIR] [--from-scratch] [--no-promote] [--force]

Without --out it fine-tunes the champion (or, with --from-scratch, trains a
new network) and registers the result under the nightly job's promotion rule,
unless --no-promote or --force. With --out it writes a model folder there and
touches no registry: that is how the shipped models are made. Training runs
in this process with all CPU threads; the first Ctrl-C stops training and
keeps the best model so far, a second one aborts.
"""

from __future__ import annotations

import getpass
import secrets
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from loguru import logger

from ..core.config import load_config
from ..errors import EX_DATAERR, EX_OK, EX_TEMPFAIL, UsageError
from ..learning.challenger import train_challenger
from ..learning.registry import open_registry
from ..learning.report import rule_line
from ..learning.retrain import Busy, pair_folders, training_run
from ..learning.serving import model_dir
from ..ops.logs import setup_logging


def _check_args(args, cfg) -> None:
    if args.queue not in cfg.queues:
        raise UsageError(f"no queue {args.queue!r} in {cfg.file}; queues: {', '.join(cfg.queues)}")
    if args.swap and not args.pairs:
        raise UsageError("--swap reads --pairs folders the other way round; give --pairs DIR")
    if args.force and args.no_promote:
        raise UsageError("--force and --no-promote contradict each other; pick one")
    if args.out is not None and (args.force or args.no_promote):
        raise UsageError("--out writes a model folder and touches no registry; --force and --no-promote "
                         "are about the registry. Drop one or the other")
    if args.minutes is not None and args.minutes <= 0:
        raise UsageError(f"--minutes must be more than 0, got {args.minutes:g}")
    if args.val_percent is not None and not 1 <= args.val_percent <= 50:
        raise UsageError(f"--val-percent must be 1 to 50, got {args.val_percent:g}")
    if args.epochs is not None and args.epochs < (1 if args.from_scratch else 0):
        raise UsageError(f"--epochs must be 1 or more (0 with a model to start from: score and calibrate "
                         f"it without training), got {args.epochs}")
    out = args.out
    if out is not None and out.exists() and (not out.is_dir() or (any(out.iterdir())
                                                                 and not (out / "model.safetensors").exists())):
        raise UsageError(f"--out {out} exists and is not a model folder; it would be replaced. "
                         f"Give a new folder or an old model folder")


class _StopOnCtrlC:
    """First Ctrl-C: finish the current step, keep the best model so far, score it. Second: abort."""

    def __init__(self):
        self.asked = False

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True
        print("\nreverser train: stopping after this step; the best model so far is kept and scored. "
              "Press Ctrl-C again to abort.", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


def main(args) -> int:
    # --minutes count from the command's start: loading, scoring and calibration included.
    began = getattr(args, "began", None) or time.monotonic()
    cfg = load_config(args.config)
    _check_args(args, cfg)
    # The service's log format (or its JSON lines), on stderr, written above the progress bar; not the
    # service's log file, which the running service rotates.
    setup_logging(replace(cfg.logging, file=None), bars=True)
    queue, qcfg = args.queue, cfg.queues[args.queue]
    who = f"reverser train ({getpass.getuser()})"
    minutes = args.minutes if args.minutes is not None or args.epochs is not None else cfg.retrain.max_minutes
    try:
        folders = pair_folders(cfg, queue, args.pairs)
    except FileNotFoundError as e:
        raise UsageError(f"{e}; --pairs takes folders of NAME_before/NAME_after pairs") from None
    shipped = qcfg.model if qcfg.model.is_dir() else None

    if args.out is not None:
        # The registry is only read here (which model serves now), never changed.
        registry = None
        serving = model_dir(cfg, queue)
        serving = serving if serving.is_dir() else None
        out = args.out.resolve()
        stage = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        stage.mkdir(parents=True)
        start, parent = (None if args.from_scratch else serving), None
    else:
        registry = open_registry(cfg, queue, who)
        out, serving = None, registry.champion_dir()
        stage = None
        start, parent = (None if args.from_scratch else serving), registry.champion_version()
    # A new network copies the shipped model's architecture when there is one, else the recipe's defaults.
    arch = shipped if start is None else None

    def announce(job, counts) -> None:
        job.save(Path(job.report) / "job.json")
        logger.info("train {}: {} on {}, budget {}; report in {}", queue,
                    f"fine-tuning {start}" if start else "a new network", ", ".join(folders),
                    " and ".join(b for b in (f"{minutes:g} min" if minutes else "",
                                             f"{args.epochs} epochs" if args.epochs is not None else "") if b),
                    job.report)

    def in_foreground(job):
        from unet.train import TrainingError

        with _StopOnCtrlC() as stop:
            try:
                return train_challenger(job, log=lambda m: logger.info("{}", m), progress=None, began=began,
                                        should_stop=lambda: stop.asked), None
            except TrainingError as e:
                return None, str(e)

    try:
        outcome = training_run(cfg, queue, registry, who=who, train=in_foreground, announce=announce, stage=stage,
                               out=out, mark=not args.pairs, force=args.force, no_promote=args.no_promote,
                               start=start, parent=parent, pairs=folders, arch=str(arch) if arch else None,
                               val_percent=args.val_percent or cfg.retrain.val_percent, minutes=minutes,
                               epochs=args.epochs, threads=None, nice=0, swap=args.swap, seed=args.seed)
    except Busy as e:
        print(f"reverser train: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        print("reverser train: aborted; nothing was registered or written", file=sys.stderr)
        return 130

    logger.info("train {}: {:.0f} s in all{}", queue, time.monotonic() - began,
                f", of a budget of {minutes:g} min" if minutes else "")
    print(_summary(outcome))
    return EX_DATAERR if outcome.decision == "failed" else EX_OK


def _summary(outcome) -> str:
    what = {"promoted": f"version {outcome.version} promoted: it is the champion now",
            "rejected": f"version {outcome.version} registered as rejected; version {outcome.champion} "
                        f"stays champion",
            "written": "model written",
            "failed": "training failed; nothing changed"}[outcome.decision]
    rule = f"\n  {rule_line(outcome.rule)}" if outcome.rule else ""
    return f"{outcome.queue}: {what}\n  why: {outcome.why}{rule}\n  report: {outcome.report}/report.png"
