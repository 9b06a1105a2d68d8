"""A color picture dropped into a colorize queue: what [queues.<q>] color_inputs makes of it.

"" (the default for a gray picture, or any picture in other queues): the
model runs on it as usual. "recolor": it is colorized anew, its own colors
replaced. "keep": it is written through unchanged (its own bytes where the
result's format is the input's). "fail": it is refused, with what to do.
"""

from __future__ import annotations

from unet import Predictor
from unet.images import Plain, has_color, with_alpha

from ...core.names import EXT_FORMAT
from .encode import encode, keeps_depth
from .jobs import Job


def color_choice(job: Job, predictor: Predictor, source: Plain) -> str:
    """What becomes of source: its queue's color_inputs for a color picture in a colorize queue, else ''."""
    return job.color_inputs if predictor.task.name == "colorize" and has_color(source.image) else ""


def _where(job: Job, color: str) -> str:
    return f'[queues.{job.queue}] color_inputs = "{color}"'


def refusal(job: Job) -> tuple[str, str]:
    """(the error, what to do) for a color picture its queue refuses (color_inputs "fail")."""
    return (f"it is a color picture already, and {_where(job, 'fail')} refuses those",
            "drop only black-and-white pictures into this queue, or set color_inputs to "
            f'"keep" (written through unchanged) or "recolor" in [queues.{job.queue}]')


def color_note(job: Job, color: str) -> str:
    """For the log line of a color input kept or recolored; '' for any other."""
    return {"keep": f"it has color already: written through unchanged ({_where(job, color)})",
            "recolor": f"it has color already: colorized anew, its own colors replaced ({_where(job, color)})"
            }.get(color, "")


def written_through(source: Plain, kept: bytes, ext: str, quality: int) -> bytes:
    """An input kept as it is, as a result: its own bytes where the result's format is the input's, else
    its picture encoded as any result is (at 16 bits where it has them and the format holds them)."""
    if source.format == EXT_FORMAT[ext.lower()]:
        return kept
    deep = source.deep is not None and keeps_depth(ext)
    return encode(source.deep if deep else with_alpha(source.image, source.alpha), ext, quality, source)
