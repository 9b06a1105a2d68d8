"""What the pipeline is given and gives back: its settings, a Job (one file), a JobOutcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...core import memory
from ...core.config import Config


@dataclass(frozen=True)
class PipelineSettings:
    max_delay_ms: float = 25.0          # wait for more items this long, from the first one queued
    decode_threads: int = 2
    encode_threads: int = 2
    capacity: int = 64                  # jobs in flight at most
    memory_budget: int = 0              # bytes of decoded images in flight at most (budget.py); 0: no limit
    max_pixels: int = 120_000_000       # refused before decoding
    max_file_bytes: int = 300_000_000   # refused unread
    retry_attempts: int = 4             # transient read/write errors are retried this often
    retry_backoff: float = 0.5          # first wait between tries; doubles
    jpeg_quality: int = 92
    on_exists: str = "number"
    writer: str = ""                    # the service instance's id, put into temporary names (owners.Owner)
    young_seconds: float = 30.0         # a file that fails to decode, written less long ago, may be unfinished
    max_pages: int = 1000               # a TIFF with more pages is refused
    decode_seconds: float = 1800.0      # a decode running longer fails its file (pipeline.py's deadline)

    @classmethod
    def from_config(cls, cfg: Config, writer: str = "") -> "PipelineSettings":
        r, lim = cfg.runtime, cfg.limits
        return cls(r.max_delay_ms, r.decode_threads, r.encode_threads, r.queue_size,
                   memory.budget(r.memory_budget_mb)[0], lim.max_pixels, int(lim.max_file_mb * 1e6),
                   lim.retry_attempts, lim.retry_backoff_seconds, cfg.output.jpeg_quality, cfg.output.on_exists,
                   writer, young_seconds=cfg.watch.rescan_seconds, max_pages=lim.max_pages,
                   decode_seconds=lim.decode_seconds)


@dataclass(frozen=True)
class JobOutcome:
    """What became of a job, for the one who submitted it."""

    ok: bool
    output: Path | None = None   # the result's final path
    error: str = ""              # what went wrong, in words a user can act on
    hint: str = ""               # what to do about it, when we know better than the generic advice
    size: int = 0                # input bytes
    ms: float = 0.0              # from job.complete_at (the file found complete) to its result written, or the failure
    unfinished: bool = False     # not judged: the file may still be being written (error says why); put it back
    passing: bool = False        # not judged: the service ran out of file handles (EMFILE); put it back to wait
    note: str = ""               # what else a user should know of a result (a color input kept or recolored)


@dataclass
class Job:
    queue: str
    path: Path                                  # the file to read
    out_dir: Path                               # where the result goes
    out_name: str                               # its name (numbered if taken, per on_exists)
    on_done: Callable[["Job", JobOutcome], None]   # called once, on a pipeline thread
    complete_at: float = field(default_factory=time.monotonic)
    label: str = ""                             # the name to show a user (not the work/ name)
    size: int = 0
    receipt: str = ""                           # write the result through out_dir/receipt and keep it
    memory: int = 0                             # bytes taken from the pipeline's memory budget, while held
    claimed: tuple[int, int] | None = None      # (size, mtime_ns) when it was claimed: a change means unfinished
    color_inputs: str = "recolor"               # a colorize queue's input that has color already: keep, recolor
                                                # or fail (QueueConfig.color_inputs); recolor: as any input
    doc: Any = None                             # a multi-page TIFF's document.Document, converted page by page
    hints: Any = None                           # unet.hints.Hints: color points for a colorize queue's picture
