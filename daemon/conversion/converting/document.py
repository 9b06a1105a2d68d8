"""A multi-page TIFF (a scanned book, a folder of prints in one file) converted page by page into one
multi-page TIFF result, the pages in the input's order.

The pipeline decodes, runs and finishes one page at a time, each taking its
memory from the budget as any image does and giving it back before the next
is decoded; each finished page is compressed into the result as it comes
(deflate, with the predictor), so only one page's images are held at once
beside the compressed pages before it, and those are in an unnamed temporary
file beside the input (in work/), not in memory: a 16-page 24 MP book's result
is 715 MB. The pages are listed once, by their directories' offsets, and
each is read as if it were the file's first (unet.tiffchain), so a TIFF of
many pages is not walked again for every page; one of more than [limits]
max_pages pages is refused before any is converted. A page keeps what a single image
keeps: 16 bits where the input has them, its alpha, its color profile. The
model is the one the first page was given, even across a hot swap. A page
that cannot be read or encoded fails the whole file (its reason names the
page): one input gives one result or one quarantined input, never half a
book. A result that is not a TIFF holds one page: the first is converted,
and the log says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from unet.images import Plain

from .encode import BAND_MODES, metadata, with_deep_alpha
from .encode16 import tiff_options


class Document:
    """The pages of one input, and the result they are written into."""

    def __init__(self, pages: tuple[int, ...], predictor, folder: Path):
        """folder: where the result's unnamed temporary file is made (the input's, on the state disk)."""
        import tifffile   # only for these results

        self.pages = (0,) + pages[1:]      # their IFDs' offsets (open_image's page); 0: the first, decoded already
        self.predictor = predictor
        self.done = 0                      # pages written so far
        self.note = ""                     # the first page's note, for the result's log line
        self.data: BinaryIO | None = None  # the whole result, a file, once the last page is in
        self._file = tempfile.TemporaryFile(dir=folder)   # unnamed: nothing is left behind by a kill
        self._file.raw.name = "result.tif"   # tifffile asks a file's name; an unnamed one's is its descriptor
        self._tif = tifffile.TiffWriter(self._file)

    @property
    def page(self) -> int:
        """The next page to convert, as open_image numbers it."""
        return self.pages[self.done]

    @property
    def more(self) -> bool:
        return self.data is None and self.done < len(self.pages)

    def where(self) -> str:
        """'page 3 of 12', for a reason or a log line."""
        return f"page {min(self.done, len(self.pages) - 1) + 1} of {len(self.pages)}"

    def add(self, image: Image.Image | np.ndarray, source: Plain) -> None:
        """Write one finished page (what a task's finish() gives with deep=True: an 8-bit image, or uint16
        samples beside the source's 16-bit alpha); the last one closes the result into .data."""
        if isinstance(image, np.ndarray):
            a = with_deep_alpha(image, source)
        else:
            a = np.asarray(image if image.mode in BAND_MODES.values() else image.convert("RGB"))
        bands = 1 if a.ndim == 2 else a.shape[2]
        icc, _ = metadata(source, BAND_MODES[bands], "TIFF")
        self._tif.write(a, **tiff_options(bands, icc))
        self.done += 1
        if self.done == len(self.pages):
            self._tif.close()
            self.data = self._file

    def close(self) -> None:
        """Let go of the result's temporary file (written out, or failed)."""
        self._file.close()
