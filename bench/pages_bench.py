"""A multi-page TIFF against the same pages as single files: `reverser convert` on each, in one run.

    python bench/pages_bench.py [--pages 8] [--megapixels 6] [--rounds 3] [--queue colorize]

Writes N gray pages (a scan's smooth picture plus noise, deflate) as one
multi-page TIFF and as N one-page TIFFs, then alternates, round by round,
`python -m daemon convert` of the book and of the folder of single pages with
the shipped model (a child process each, so both see the same machine load).
Printed: the median seconds of each and their ratio. The pages of a book go
through one at a time (document.py), where single files overlap their
decoding, forward passes and encoding: the ratio is what that costs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def pages(n: int, megapixels: float) -> list[np.ndarray]:
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 255, (h // 64 + 1, w // 64 + 1), dtype=np.uint8)
        page = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR), np.int16)
        out.append((page + rng.integers(-4, 5, page.shape)).clip(0, 255).astype(np.uint8))
    return out


def convert(queue: str, inputs: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "daemon", "convert", "--config", str(ROOT / "config.toml"),
                    "--queue", queue, "-o", str(out), *map(str, inputs)], cwd=ROOT, check=True,
                   capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--megapixels", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queue", default="colorize")
    args = ap.parse_args()
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "single").mkdir()
        made = pages(args.pages, args.megapixels)
        with tifffile.TiffWriter(tmp / "book_before.tif") as tif:
            for page in made:
                tif.write(page, photometric="minisblack", compression="zlib")
        singles = []
        for i, page in enumerate(made):
            singles.append(tmp / "single" / f"page{i:03d}_before.tif")
            tifffile.imwrite(singles[-1], page, photometric="minisblack", compression="zlib")
        times = {"book": [], "single": []}
        for r in range(args.rounds):
            for kind in (("book", "single") if r % 2 == 0 else ("single", "book")):
                inputs = [tmp / "book_before.tif"] if kind == "book" else singles
                times[kind].append(convert(args.queue, inputs, tmp / f"out-{kind}-{r}"))
        with tifffile.TiffFile(tmp / "out-book-0" / "book_after.tif") as tif:
            assert len(tif.pages) == args.pages, "every page in the book's result"
        h, w = made[0].shape
        book, single = statistics.median(times["book"]), statistics.median(times["single"])
        print(f"{args.pages} pages of {w}x{h}, {args.queue}: one multi-page TIFF {book:.2f} s, "
              f"{args.pages} single TIFFs {single:.2f} s (medians of {args.rounds}); book / single {book / single:.2f}")


if __name__ == "__main__":
    main()
