"""One job's way through the pipeline's stages, as the decode and encode threads run them: the file read
within the limits, the picture opened and prepared for the model, what its result's log line will add (the
notes), and its result's bytes made from the model's output.

Nothing here touches the pipeline's queues or threads: each step returns what it found, or the error as a
user reads it, and the pipeline decides (fail, wait, retry, on to the batcher, or the next page).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from unet import ImageError, Predictor, open_image
from unet.hints import HintError
from unet.images import Plain
from unet.tasks import Prepared

from .colorinputs import color_choice, color_note, written_through
from .document import Document
from .encode import encode, keeps_depth, keeps_pages, takes_ycc
from .jobs import Job, PipelineSettings
from .workers import Named


def read(job: Job, s: PipelineSettings) -> bytes:
    """The job's file, whole; ImageError when it is no regular file or over the size limit (OSError: retry)."""
    st = os.stat(job.path)
    job.size = st.st_size
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file")
    if st.st_size > s.max_file_bytes:
        raise ImageError(f"the file is {st.st_size / 1e6:.1f} MB, over the limit of "
                         f"{s.max_file_bytes / 1e6:g} MB; raise limits.max_file_mb if it is wanted")
    return job.path.read_bytes()


@dataclass
class Item:
    """A decoded job in flight: from the decode threads through the batcher to the encode threads."""

    job: Job
    source: Plain
    prepared: Prepared | None  # None: the input is written through as it is (kept)
    predictor: Predictor     # the model that prepared it runs it, even across a hot swap
    queued: float            # monotonic time it entered the batch queue
    kept: bytes | None = None  # the file's bytes, for an input written through
    note: str = ""           # for the log line: a color input kept or recolored


def result(item: Item, y, s: PipelineSettings) -> bytes | None:
    """The result's bytes from the model's output y (a color input kept: written through); None while a
    document has pages to go (this page is in, the next is to be decoded)."""
    job = item.job
    ext = Path(job.out_name).suffix
    if job.doc is not None and job.doc.data is not None:
        return job.doc.data   # the last page is in already: a retry of the write
    if item.prepared is None:
        return written_through(item.source, item.kept, ext, s.jpeg_quality)
    if job.doc is not None:
        job.doc.add(item.predictor.finish(item.prepared, y, deep=True), item.source)
        return None if job.doc.more else job.doc.data
    image = item.predictor.finish(item.prepared, y, ycc=takes_ycc(ext), deep=keeps_depth(ext))
    return encode(image, ext, s.jpeg_quality, item.source)


@dataclass
class Decoded:
    """What a decode found: the picture and the model's input, or why it failed."""

    source: Plain | None = None
    prepared: Prepared | None = None
    color: str = ""                 # colorinputs.color_choice: "", keep, recolor, fail
    kept: bytes | None = None       # a color input written through unchanged: its bytes
    caught: BaseException | None = None
    error: str = ""                 # as a user reads it, with the page where there is one
    decoding: bool = False          # the error is the image's own (a young file may be unfinished)


def prepare(job: Job, held: list[bytes], predictor: Predictor, s: PipelineSettings) -> Decoded:
    """Open and prepare job's picture (a document's next page, when job.doc is set); held: [its file's bytes],
    the only reference to them, let go once the picture is decoded (a large file's bytes are not kept while
    the model's input is made)."""
    data, doc = held.pop(), job.doc
    where = f"{doc.where()}: " if doc else ""
    try:
        source = open_image(Named(data, job.label or job.path.name), s.max_pixels, doc.page if doc else 0,
                            s.max_pages)
        color = "" if doc else color_choice(job, predictor, source)   # a color picture: keep it?
        kept = data if color == "keep" else None
        del data
        prepared = predictor.prepare(source, None if doc else job.hints) if color in ("", "recolor") else None
        return Decoded(source, prepared, color, kept)
    except Exception as e:  # Pillow raises a zoo of errors on hostile files
        if isinstance(e, HintError):   # points for a model that does not colorize
            return Decoded(caught=e, error=f"{where}{e}")
        if isinstance(e, ImageError):
            return Decoded(caught=e, error=where + str(e), decoding=str(e).startswith("cannot decode"))
        return Decoded(caught=e, error=f"{where}cannot decode image: {type(e).__name__}: {e}", decoding=True)


def notes(job: Job, d: Decoded, predictor: Predictor) -> str:
    """What the result's line adds (the color kept, the points, the pages, an animation's first frame); a
    multi-page TIFF whose result keeps its pages gets its Document here (job.doc)."""
    doc, source = job.doc, d.source
    note = doc.note if doc else color_note(job, d.color)
    if job.hints and d.prepared is not None and not doc:
        note = "; ".join(filter(None, [note, f"colored with {job.hints.describe()}"]))
    if source.pages and d.prepared is not None and not doc:
        if keeps_pages(Path(job.out_name).suffix):
            job.doc = Document(source.pages, predictor, job.path.parent)
            note = job.doc.note = "; ".join(filter(None, [note, f"all {len(job.doc.pages)} pages"]))
        else:
            note = "; ".join(filter(None, [note, f"only page 1 of its {len(source.pages)} was converted: a "
                                           f"{Path(job.out_name).suffix} result holds one page "
                                           "([output] format = \"tiff\" keeps them all)"]))
    if source.frames > 1 and d.kept is None:
        note = "; ".join(filter(None, [note, f"the first of its {source.frames} frames was converted "
                                             "(an animation)"]))
    return note
