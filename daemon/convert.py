"""reverser convert: files or folders, once, with a progress bar and a per-file verdict."""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loguru import logger

from unet import ImageError, Predictor, open_image
from unet.checkpoint import CheckpointError

from .cli import EX_CONFIG, EX_DATAERR, EX_OK, UsageError
from .config import Config, load_config
from .output import EXT_FORMAT, encode, output_name, write_atomic
from .models import model_dir


def find_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders contribute their image files (not recursively, not hidden ones)."""
    found = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                            and f.suffix.lower() in EXT_FORMAT and "_after" not in f.stem)
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
    try:
        predictor = Predictor(model_dir(cfg, queue), device=cfg.runtime.device,
                              max_batch=1 if cfg.runtime.max_batch == "auto" else cfg.runtime.max_batch)
    except CheckpointError as e:
        print(f"reverser convert: cannot load the {queue!r} model: {e}", file=sys.stderr)
        return EX_CONFIG
    failed = convert_files(predictor, inputs, cfg, args.output)
    return EX_DATAERR if failed else EX_OK


def convert_files(predictor: Predictor, inputs: list[Path], cfg: Config, out_dir: Path | None) -> int:
    """Convert each input, decoding and writing on threads; return how many failed."""
    from tqdm import tqdm

    bar = tqdm(total=len(inputs), unit="img", disable=not sys.stderr.isatty())
    failed = 0
    limit = cfg.limits.max_pixels

    def load(path: Path):
        if path.stat().st_size > cfg.limits.max_file_mb * 1e6:
            raise ImageError(f"file is over the limit of {cfg.limits.max_file_mb:g} MB")
        p = open_image(path, limit)
        return p, predictor.prepare(p)

    def write(path: Path, source, prepared, y) -> Path:
        image = predictor.finish(prepared, y)
        name = output_name(path.name, cfg.output.format)
        data = encode(image, Path(name).suffix, cfg.output.jpeg_quality, source)
        return write_atomic(out_dir or path.parent, name, data, cfg.output.on_exists)

    def settle(path, t0, fut):
        nonlocal failed
        try:
            out = fut.result()
            logger.debug("{} -> {} in {:.0f} ms", path, out, 1000 * (time.monotonic() - t0))
        except (ImageError, OSError, ValueError) as e:
            failed += 1
            bar.write(f"{path}: failed to write: {e}")
        bar.update()

    # A window of decodes ahead and writes behind keeps memory bounded for any number of inputs.
    window = 2 * cfg.runtime.decode_threads
    with ThreadPoolExecutor(cfg.runtime.decode_threads) as decoders, \
            ThreadPoolExecutor(cfg.runtime.encode_threads) as encoders:
        loads = deque((path, decoders.submit(load, path)) for path in inputs[:window])
        rest = iter(inputs[window:])
        writes = deque()
        while loads:
            path, fut = loads.popleft()
            nxt = next(rest, None)
            if nxt is not None:
                loads.append((nxt, decoders.submit(load, nxt)))
            t0 = time.monotonic()
            try:
                source, prepared = fut.result()
                y = predictor.run([prepared])[0]
            except (ImageError, OSError) as e:
                failed += 1
                bar.write(f"{path}: failed: {e}")
                bar.update()
                continue
            writes.append((path, t0, encoders.submit(write, path, source, prepared, y)))
            while len(writes) > window:
                settle(*writes.popleft())
        while writes:
            settle(*writes.popleft())
    bar.close()
    ok = len(inputs) - failed
    print(f"converted {ok} of {len(inputs)} file(s)" + (f"; {failed} failed" if failed else ""),
          file=sys.stderr)
    return failed
