"""Peak memory of the picture cases: a multi-page TIFF book converted, and dashboard pictures asked for
at once; each against a baseline measured in the same run.

    python bench/pictures_bench.py book [--pages 16] [--megapixels 24] [--budget-mb 512] [--before TREE]
    python bench/pictures_bench.py dashboard [--files 8] [--asks 2] [--megapixels 64] [--budget-mb 1024]
                                             [--before TREE]

book: `python -m daemon convert` (a child process, the shipped colorize
model, [runtime] memory_budget_mb as given) of one page alone, then of the
book of N such pages; printed: each child's peak RSS and their ratio. With
--before, the same book is converted by another checkout too (the code
before a change). dashboard: done TIFFs of N megapixels, each asked for
`asks` times at once as a full view and a thumbnail (daemon/web/thumbs.py,
files x asks x 2 threads, through a memory budget of budget-mb); printed: the
child's peak RSS, against one picture's full view and thumbnail alone.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pages_bench import pages  # noqa: E402  (the same scan-like pages)


def peak_of(cmd: list[str], cwd: Path) -> float:
    """Run cmd in a child and give its peak RSS in MB (through a wrapper, so each run is its own)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               " sys.exit(r.stdout + r.stderr) if r.returncode else"
               " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{out.stderr[-3000:]}")
    return int(out.stdout.split()[-1]) / 1024


def config(tmp: Path, budget_mb: int, tree: Path) -> Path:
    text = (tree / "config.toml").read_text()
    text = re.sub(r"(?m)^memory_budget_mb = .*$", f"memory_budget_mb = {budget_mb}", text)
    text = re.sub(r"(?m)^max_file_mb = .*$", "max_file_mb = 4000", text)   # a 16-page book of 24 MP: 330 MB
    text = re.sub(r'(?m)^state = .*$', f'state = "{tmp / "state"}"', text)
    text = re.sub(r'(?m)^model = "models/', f'model = "{tree / "models"}/', text)
    path = tmp / f"config-{abs(hash(str(tree)))}.toml"
    path.write_text(text)
    return path


def convert(tree: Path, cfg: Path, inputs: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    return peak_of([sys.executable, "-m", "daemon", "convert", "--config", str(cfg), "--queue", "colorize",
                    "-o", str(out), *map(str, inputs)], tree)


def book(args) -> None:
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = pages(args.pages, args.megapixels)
        with tifffile.TiffWriter(tmp / "book_before.tif") as tif:
            for p in made:
                tif.write(p, photometric="minisblack", compression="zlib")
        tifffile.imwrite(tmp / "page_before.tif", made[0], photometric="minisblack", compression="zlib")
        del made
        cfg = config(tmp, args.budget_mb, ROOT)
        single = convert(ROOT, cfg, [tmp / "page_before.tif"], tmp / "out1")
        after = convert(ROOT, cfg, [tmp / "book_before.tif"], tmp / "out2")
        result = (tmp / "out2" / "book_after.tif").stat().st_size / 1e6
        print(f"{args.pages} pages of {args.megapixels:g} MP, budget {args.budget_mb} MB, result {result:.0f} MB: "
              f"one page alone {single:.0f} MB peak RSS; the book {after:.0f} MB ({after / single:.2f}x)")
        if args.before:
            tree = Path(args.before).resolve()
            before = convert(tree, config(tmp, args.budget_mb, tree), [tmp / "book_before.tif"], tmp / "out3")
            print(f"the book, by {tree.name}: {before:.0f} MB ({before / single:.2f}x one page alone)")


CHILD = """
import sys, threading, resource
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import os
from daemon.conversion.converting.budget import MemoryBudget
from daemon.core import memory
from daemon.web import thumbs
from daemon.web.ondisk import Opened
memory.share_arenas()   # as the service does before it starts its threads
if len(sys.argv) < 5:   # the baseline: the imports alone
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit()
files, asks, budget_mb = [Path(p) for p in sys.argv[4:]], int(sys.argv[2]), int(sys.argv[3])
budget = MemoryBudget(budget_mb << 20, on_pressure=memory.trim)   # as the pipeline's
import tempfile
cache = Path(tempfile.mkdtemp(dir=Path(sys.argv[4]).parent))   # a cold cache for each run
def opened(p):
    st = p.stat()
    return Opened(os.open(p, os.O_RDONLY), st.st_size, p.name, st.st_mtime)
def ask(p, i, make):
    try:
        make(cache, p.stem, opened(p), 10**9, budget)
    except TypeError:   # a checkout from before pictures took from a budget
        make(cache, p.stem, opened(p), 10**9)
threads = [threading.Thread(target=ask, args=(p, i, make)) for p in files for i in range(asks)
           for make in (thumbs.viewable, thumbs.thumbnail)]
for t in threads: t.start()
for t in threads: t.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def dashboard(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w = int((args.megapixels * 1e6 * 3 / 2) ** 0.5)
        h = int(args.megapixels * 1e6 / w)
        paths = []
        for i in range(args.files):
            rng = np.random.default_rng(i)
            small = Image.fromarray(rng.integers(0, 255, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8))
            paths.append(tmp / f"p{i}_after.tif")
            small.resize((w, h), Image.Resampling.BILINEAR).save(paths[-1], compression="tiff_deflate")

        def run(files, asks, tree):
            out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(asks), str(args.budget_mb),
                                  *map(str, files)], capture_output=True, text=True, cwd=tree)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            return int(out.stdout.split()[-1]) / 1024
        base = run([], 1, ROOT)
        alone = run(paths[:1], 1, ROOT) - base
        flood = run(paths, args.asks, ROOT) - base
        n = args.files * args.asks * 2
        print(f"{n} asks at once ({args.files} TIFFs of {args.megapixels:g} MP, full view and thumbnail, "
              f"{args.asks} each), budget {args.budget_mb} MB, above the imports' {base:.0f} MB: one picture "
              f"alone +{alone:.0f} MB peak RSS, all at once +{flood:.0f} MB ({flood / alone:.2f}x)")
        if args.before:
            tree = Path(args.before).resolve()
            before = run(paths, args.asks, tree) - base
            print(f"all at once, by {tree.name}: +{before:.0f} MB ({before / alone:.2f}x one picture alone)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="case", required=True)
    b = sub.add_parser("book")
    b.add_argument("--pages", type=int, default=16)
    b.add_argument("--megapixels", type=float, default=24.0)
    b.add_argument("--budget-mb", type=int, default=512)
    b.add_argument("--before", help="another checkout to convert the book with too")
    d = sub.add_parser("dashboard")
    d.add_argument("--files", type=int, default=8)
    d.add_argument("--asks", type=int, default=2)
    d.add_argument("--megapixels", type=float, default=64.0)
    d.add_argument("--budget-mb", type=int, default=1024)
    d.add_argument("--before", help="another checkout to serve the pictures with too")
    args = ap.parse_args()
    book(args) if args.case == "book" else dashboard(args)


if __name__ == "__main__":
    main()
