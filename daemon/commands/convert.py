"""reverser convert: files or folders, once, through the service's pipeline; a progress bar and a verdict per file."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from unet import Predictor
from unet.checkpoint import CheckpointError
from unet.hints import HintError, load_hints

from ..conversion.claims.sidecar import hints_beside, merged_hints
from ..conversion.converting import autobatch
from ..conversion.converting.pipeline import Job, JobOutcome, Pipeline, PipelineSettings
from ..core.config import Config, load_config
from ..core.names import is_convertible, is_hints, output_name
from ..errors import EX_CONFIG, EX_DATAERR, EX_OK, UsageError
from ..learning.serving import model_dir
from ..ops.logs import setup_logging

def find_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their image files (not recursively, not hidden ones, not hints)."""
    found = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and is_convertible(f.name) and not is_hints(f.name))
        elif p.exists():
            found.append(p)
        else:
            raise UsageError(f"{p}: no such file or folder")
    return found


def main(args) -> int:
    cfg = load_config(args.config)
    queue = args.queue or next(iter(cfg.queues))
    if queue not in cfg.queues:
        raise UsageError(f"no queue {queue!r} in {cfg.file}; queues: {', '.join(cfg.queues)}")
    inputs = find_inputs(args.paths)
    if not inputs:
        print("reverser convert: no image files found", file=sys.stderr)
        return EX_DATAERR
    if getattr(args, "skip_existing", False):
        todo = [p for p in inputs if not ((args.output or p.parent) / output_name(p.name, cfg.output.format)).exists()]
        if len(todo) < len(inputs):
            print(f"reverser convert: {len(inputs) - len(todo)} input(s) skipped: their result is there already",
                  file=sys.stderr)
        if not todo:
            return EX_OK
        inputs = todo
    hints = getattr(args, "hints", None)
    if hints is not None:
        if len(inputs) != 1:
            raise UsageError(f"--hints is for one input; {len(inputs)} were given (put X_hints.json beside each)")
        try:
            hints = load_hints(hints)
        except (HintError, OSError) as e:
            print(f"reverser convert: {args.hints}: {e}", file=sys.stderr)
            return EX_DATAERR
    # The bar and the per-file lines are the output; the pipeline's own lines only when they matter.
    setup_logging(replace(cfg.logging, level="WARNING", file=None), bars=True)  # lines above the bar
    if cfg.runtime.torch_threads:
        import torch

        torch.set_num_threads(cfg.runtime.torch_threads)
    try:
        predictor = Predictor(model_dir(cfg, queue), device=cfg.runtime.device, max_batch=1)
    except (CheckpointError, ValueError) as e:
        print(f"reverser convert: cannot load the {queue!r} model: {e}", file=sys.stderr)
        return EX_CONFIG
    failed = convert_files(predictor, inputs, cfg, args.output, queue, args.color_inputs, hints)
    return EX_DATAERR if failed else EX_OK


def convert_files(predictor: Predictor, inputs: list[Path], cfg: Config, out_dir: Path | None,
                  queue: str = "convert", color_inputs: str | None = None, hints=None) -> int:
    """Convert each input through the service's pipeline; return how many failed. color_inputs: what becomes
    of a color input in a colorize queue (default: the queue's [queues.<q>] color_inputs). hints: the color
    points of a single input (--hints); without them each input takes the X_hints.json or .png beside it."""
    if color_inputs is None:
        color_inputs = cfg.queues[queue].color_inputs if queue in cfg.queues else "recolor"
    from tqdm import tqdm

    max_batch = cfg.runtime.max_batch
    if max_batch == "auto":   # as the service decides it, and with its kept choice (autobatch.for_files)
        max_batch = autobatch.for_files(predictor, len(inputs), cfg.paths.state / autobatch.KEPT_FILE).size
    terminal = sys.stderr.isatty()
    bar = tqdm(total=len(inputs), unit="img", disable=not terminal)
    failures = []
    lock = threading.Lock()

    def done(job: Job, outcome: JobOutcome) -> None:
        with lock:
            if not outcome.ok:
                failures.append(job.path)
                bar.write(f"{job.path}: failed: {outcome.error}" + (f"; {outcome.hint}" if outcome.hint else ""),
                          file=sys.stderr)
            elif outcome.note or not terminal:   # a log or a pipe gets a line for every file, as the service's
                bar.write(f"{job.path} -> {outcome.output}" + (f": {outcome.note}" if outcome.note else ""),
                          file=sys.stderr)
            bar.update()

    # No writer comes back to a file given on the command line: a broken one is judged on its content at once.
    settings = replace(PipelineSettings.from_config(cfg), young_seconds=0.0)
    pipeline = Pipeline({queue: predictor}, {queue: max_batch}, settings)
    try:
        for path in inputs:
            try:
                said = hints if hints is not None else merged_hints(hints_beside(path.parent, path.name))
            except (HintError, OSError) as e:   # the picture is not converted without the points it was given
                done(Job(queue, path, path.parent, "", done), JobOutcome(False, error=f"bad hints: {e}"))
                continue
            pipeline.reserve()  # blocks while the pipeline is full: memory stays bounded for any number of inputs
            pipeline.submit(Job(queue, path, out_dir or path.parent, output_name(path.name, cfg.output.format),
                                done, label=path.name, color_inputs=color_inputs, hints=said))
        pipeline.wait_idle()
    finally:
        pipeline.close(time.monotonic() + 5.0)
        bar.close()
    ok = len(inputs) - len(failures)
    print(f"converted {ok} of {len(inputs)} file(s)" + (f"; {len(failures)} failed" if failures else ""),
          file=sys.stderr)
    return len(failures)
