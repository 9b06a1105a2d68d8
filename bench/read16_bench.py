"""Reading a 16-bit color master: its time and peak memory with imagecodecs (full depth) and without (8 bits).

    python bench/read16_bench.py [--megapixels 12 48] [--rounds 3]

For each size one 16-bit RGB picture (the picture in the high bytes, noise
in the low ones, as a scan's) is written as a PNG and as a deflate and an
LZW TIFF. Each file is read by unet.images.open_image in a child process of
its own, alternating, round by round, between a child where imagecodecs
imports (the 16-bit samples kept as Plain.deep beside Pillow's 8-bit copy)
and one where it cannot (Pillow's 8 bits alone: how a 16-bit color PNG was
read before imagecodecs was used), so both see the same machine load.
Printed per file: the median read time of each, their ratio, and the peak
bytes per pixel over the child's baseline (the file's bytes are read before
the baseline is taken, as the service holds them before it decodes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.conversion.converting.encode16 import encode16  # noqa: E402

_READ = r"""
import sys, time
if sys.argv[2] == "without":
    sys.modules["imagecodecs"] = None   # an install without it: import imagecodecs raises ImportError
sys.path.insert(0, sys.argv[3])
from unet.images import open_image
from daemon.conversion.converting.workers import Named
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
data = open(sys.argv[1], "rb").read()
base = kb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")   # the peak from here on, not from reading the file
t = time.perf_counter()
p = open_image(Named(data, sys.argv[1]))
seconds = time.perf_counter() - t
w, h = p.image.size
print(seconds, (kb("VmHWM:") - base) / (w * h), int(p.deep is not None))
"""


def write_inputs(folder: Path, megapixels: float) -> dict[str, Path]:
    """A 16-bit RGB PNG, deflate TIFF and LZW TIFF of the same samples, about megapixels large, by name."""
    import tifffile

    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    small = np.random.default_rng(0).integers(0, 255, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)).astype(np.uint16) * 257
    rgb += np.random.default_rng(1).integers(0, 256, rgb.shape, dtype=np.uint16)
    paths = {"PNG": folder / "x.png", "deflate TIFF": folder / "deflate.tif", "LZW TIFF": folder / "lzw.tif"}
    paths["PNG"].write_bytes(encode16(rgb, "PNG", None, None))
    for name, compression in (("deflate TIFF", "zlib"), ("LZW TIFF", "lzw")):
        tifffile.imwrite(paths[name], rgb, photometric="rgb", compression=compression, predictor=True)
    return paths


def read(path: Path, codecs: str) -> tuple[float, float, bool]:
    """(seconds, peak bytes per pixel, whether the 16-bit samples were kept) of one open_image in a child."""
    out = subprocess.run([sys.executable, "-c", _READ, str(path), codecs, str(ROOT)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), out[2] == "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, nargs="+", default=[12, 48])
    ap.add_argument("--rounds", type=int, default=3, help="reads of each file each way, alternating")
    args = ap.parse_args()
    print("| 16-bit RGB file | size | read without imagecodecs | read with it | ratio | "
          "peak without, bytes/pixel | peak with |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mp in args.megapixels:
        with tempfile.TemporaryDirectory(prefix="reverser-read16-") as d:
            for name, path in write_inputs(Path(d), mp).items():
                runs = {"without": [], "with": []}
                for _ in range(args.rounds):
                    for codecs in runs:
                        runs[codecs].append(read(path, codecs))
                (t0, p0, k0), (t1, p1, k1) = ((statistics.median(r[0] for r in runs[c]),
                                               max(r[1] for r in runs[c]), runs[c][0][2]) for c in runs)
                bits = lambda kept: "16 bits" if kept else "8 bits"  # noqa: E731
                print(f"| {name}, {path.stat().st_size / 1e6:.0f} MB | {mp:g} MP | {t0:.2f} s ({bits(k0)}) | "
                      f"{t1:.2f} s ({bits(k1)}) | {t1 / t0:.2f} | {p0:.1f} | {p1:.1f} |", flush=True)


if __name__ == "__main__":
    main()
