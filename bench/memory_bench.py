"""Memory of the service under floods of large images: a real `reverser run` child, its peak and idle RSS.

    python bench/memory_bench.py [--queue reverse] [--count 16] [--megapixels 12 48 100] [--budget-mb auto]
    python bench/memory_bench.py --probe      # what one image costs at its peak, by task and input bands
    python bench/memory_bench.py --probe --inputs "16-bit color PNG" "16-bit color LZW TIFF"

For each size, a fresh service on temporary folders (the shipped model of the
queue, one model thread per core) is started; once it is ready its baseline
(VmHWM and VmRSS) is read, then `--count` near-flat gray JPEGs of that size
(a blank scanned page: about 12 kB per megapixel to read, every pixel to
decode) are renamed into its inbox at once. Printed per flood: the budget the
service logged, the baseline, the peak RSS (VmHWM), the peak over the
baseline, the memory still resident once idle (a few seconds after the last
result), the time and whether anything was lost, failed or killed.

--probe decodes, prepares, runs, finishes and encodes one generated 12 MP and
one 48 MP image per (task, input: gray or color JPEG, 16-bit gray PNG or TIFF,
16-bit color PNG, TIFF or LZW TIFF, finished at 16 bits) in a child process
each, and prints the peak bytes per pixel over the child's baseline next to
the estimate that conversion/converting/budget.py makes from the header.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.conversion.converting.budget import image_cost  # noqa: E402


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def size_of(megapixels: float) -> tuple[int, int]:
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    return w, int(megapixels * 1e6 / w)


def flat_gray_jpeg(megapixels: float) -> bytes:
    w, h = size_of(megapixels)
    small = np.random.default_rng(0).integers(110, 146, (h // 256 + 1, w // 256 + 1), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small, "L").resize((w, h), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def flood(args, megapixels: float, scratch: Path) -> dict:
    queue = args.queue
    task = "colorize" if queue == "colorize" else "translate"
    model = ROOT / "models" / queue
    budget = '"auto"' if args.budget_mb == "auto" else int(args.budget_mb)
    cfg = scratch / "config.toml"
    cfg.write_text(f'[runtime]\ndevice = "cpu"\nmax_batch = {args.max_batch}\nmemory_budget_mb = {budget}\n'
                   f'[limits]\nmax_pixels = 200000000\n[retrain]\nenabled = false\n'
                   f'[queues.{queue}]\ntask = "{task}"\nmodel = "{model}"\n')
    data = flat_gray_jpeg(megapixels)
    stage, inbox = scratch / "stage", scratch / "inbox" / queue
    stage.mkdir()
    names = [f"big{i:03d}_before.jpg" for i in range(args.count)]
    for n in names:
        (stage / n).write_bytes(data)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    log = scratch / "service.log"
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    text = lambda: log.read_text(errors="replace")  # noqa: E731
    try:
        while "Ready:" not in text():
            if proc.poll() is not None:
                raise SystemExit(f"the service did not start:\n{text()}")
            time.sleep(0.1)
        time.sleep(1.0)
        base_peak, base_rss = status_kb(proc.pid, "VmHWM:"), status_kb(proc.pid, "VmRSS:")
        t0 = time.monotonic()
        for n in names:
            os.rename(stage / n, inbox / n)
        done, failed = scratch / "var" / "done" / queue, scratch / "outbox" / queue / "failed"
        count = lambda d: len(os.listdir(d)) if d.is_dir() else 0  # noqa: E731
        while count(done) + count(failed) < args.count and proc.poll() is None:
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        peak = status_kb(proc.pid, "VmHWM:")
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and \
                status_kb(proc.pid, "VmRSS:") > base_rss + 100 * 1024:
            time.sleep(0.2)
        idle = status_kb(proc.pid, "VmRSS:")
        killed = proc.poll() is not None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    m = re.search(r"memory budget for decoded images in flight: ([\d.]+ GiB) \(([^;]*)", text())
    return dict(mp=megapixels, file_mb=len(data) / 1e6, budget=f"{m[1]} ({m[2]})" if m else "?",
                base=base_peak / 1024, peak=peak / 1024, idle=idle / 1024, seconds=seconds,
                converted=count(done), failed=count(failed) // 2, killed=killed)


_PROBE = r"""
import io, sys
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(1)
from unet import Predictor, open_image
from daemon.conversion.converting.encode import encode, keeps_depth, takes_ycc
from daemon.conversion.converting.encode16 import encode16
from daemon.conversion.converting.workers import Named
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
queue, mode, mp, ext, compression = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[5], sys.argv[6]
p = Predictor(sys.argv[4] + "/models/" + queue, device="cpu")
w = int((mp * 1e6 * 4 / 3) ** 0.5); h = int(mp * 1e6 / w)
small = np.random.default_rng(0).integers(0, 255, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
im = im.convert("L") if mode in ("L", "I;16", "LA;16") else im
deep = None
if mode.endswith(";16"):   # a 16-bit scan: the picture in the high byte, noise in the low one
    deep = np.asarray(im).astype(np.uint16) * 257
    deep += np.random.default_rng(1).integers(0, 256, deep.shape, dtype=np.uint16)
    im = Image.fromarray(deep) if mode == "I;16" else im
    if "A" in mode:   # an alpha band: opaque but for a vignette
        yy, xx = np.ogrid[0:h, 0:w]
        alpha = (65535 * np.clip(1.5 - np.hypot(xx / w - 0.5, yy / h - 0.5) * 2.5, 0, 1)).astype(np.uint16)
        deep = np.dstack([deep, alpha])
buf = io.BytesIO()
if mode != "I;16" and mode.endswith(";16") and ext == ".png":
    buf.write(encode16(deep, "PNG", None, None))
elif mode != "I;16" and mode.endswith(";16"):
    import tifffile
    tifffile.imwrite(buf, deep, photometric="minisblack" if mode == "LA;16" else "rgb", compression=compression,
                     predictor=True, extrasamples=[2] if "A" in mode else None)
elif compression:   # an 8-bit TIFF Pillow cannot open (JPEG 2000, say): tifffile reads it alone
    import tifffile
    tifffile.imwrite(buf, np.asarray(im), photometric="rgb" if mode == "RGB" else "minisblack",
                     compression=compression)
else:
    im.save(buf, {".jpg": "JPEG", ".png": "PNG", ".tif": "TIFF"}[ext], **({"quality": 90} if ext == ".jpg" else {}))
data = buf.getvalue(); del im, buf, small, deep
warm = p.prepare(Image.new({"I;16": "L", "LA;16": "L"}.get(mode, "RGB" if mode.endswith(";16") else mode), (64, 48)))
p.finish(warm, p.run([warm])[0], ycc=True)
base = kb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")   # the peak from here on, not from making the input
src = open_image(Named(data, "x" + ext))
item = p.prepare(src)
out = p.finish(item, p.run([item])[0], ycc=takes_ycc(ext), deep=keeps_depth(ext))
encode(out, ext, 92, src)
print(w, h, (kb("VmHWM:") - base) / (w * h))
"""


# (mode made, file extension, TIFF compression, as the table names it); mode RGB;16 is 16-bit color, RGBA;16
# with alpha, LA;16 gray with alpha (a TIFF of it is one Pillow cannot open: tifffile reads it alone).
PROBE_INPUTS = (("L", ".jpg", "", "gray JPEG"), ("RGB", ".jpg", "", "color JPEG"),
                ("I;16", ".png", "", "16-bit gray PNG"), ("I;16", ".tif", "", "16-bit gray TIFF"),
                ("RGB;16", ".png", "", "16-bit color PNG"), ("RGB;16", ".tif", "zlib", "16-bit color TIFF"),
                ("RGB;16", ".tif", "lzw", "16-bit color LZW TIFF"), ("RGBA;16", ".png", "", "16-bit RGBA PNG"),
                ("RGBA;16", ".tif", "zlib", "16-bit RGBA TIFF"), ("LA;16", ".png", "", "16-bit gray+alpha PNG"),
                ("LA;16", ".tif", "zlib", "16-bit gray+alpha TIFF"), ("L", ".tif", "jpeg2000", "gray JPEG 2000 TIFF"),
                ("RGB", ".tif", "jpeg2000", "color JPEG 2000 TIFF"))


def probe(only: list[str] | None) -> None:
    print("| queue | input | size | measured peak, bytes/pixel | estimate (budget.py), bytes/pixel |")
    print("| --- | --- | --- | --- | --- |")
    for queue, task in (("colorize", "colorize"), ("reverse", "translate")):
        for mode, ext, compression, what in PROBE_INPUTS:
            if only and what not in only:
                continue
            for mp in (12, 48):
                out = subprocess.run([sys.executable, "-c", _PROBE, queue, mode, str(mp), str(ROOT), ext,
                                      compression], capture_output=True, text=True, check=True).stdout.split()
                w, h, per = int(out[0]), int(out[1]), float(out[2])
                deep = mode.endswith(";16")
                # the mode budget.py reads from the header: Pillow's (a 16-bit gray+alpha PNG opens as RGBA)
                # or, for the TIFF Pillow cannot open, tifffile's
                header = {"RGB;16": "RGB", "RGBA;16": "RGBA", "LA;16": "LA" if ext == ".tif" else "RGBA"}
                alone = ext == ".tif" and (mode == "LA;16" or compression == "jpeg2000")   # read by tifffile
                est = image_cost(task, w, h, header.get(mode, mode), deep=deep, alone=alone) / (w * h)
                print(f"| {queue} | {what} | {w}x{h} | {per:.1f} | {est:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queue", default="reverse", choices=["colorize", "reverse"])
    ap.add_argument("--count", type=int, default=16, help="images per flood")
    ap.add_argument("--megapixels", type=float, nargs="+", default=[12, 48, 100])
    ap.add_argument("--budget-mb", default="auto", help='[runtime] memory_budget_mb: "auto" or MiB')
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--probe", action="store_true", help="the peak cost of one image, measured and estimated")
    ap.add_argument("--inputs", nargs="+", choices=[i[-1] for i in PROBE_INPUTS],
                    help="--probe only these inputs (all by default)")
    args = ap.parse_args()
    if args.probe:
        return probe(args.inputs)
    print(f"{args.count} near-flat gray JPEGs per flood into the {args.queue} queue at once, "
          f"{os.cpu_count()} CPU(s), budget {args.budget_mb}")
    print("| flood | file | budget | baseline | peak RSS | over baseline | resident once idle | time | converted |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mp in args.megapixels:
        with tempfile.TemporaryDirectory(prefix="reverser-memory-") as d:
            r = flood(args, mp, Path(d))
        gib = lambda mb: f"{mb / 1024:.2f} GiB"  # noqa: E731
        print(f"| {args.count} x {mp:g} MP | {r['file_mb']:.2f} MB | {r['budget']} | {gib(r['base'])} | "
              f"{gib(r['peak'])} | {gib(r['peak'] - r['base'])} | {gib(r['idle'])} | {r['seconds']:.0f} s | "
              f"{r['converted']} of {args.count}, {r['failed']} failed{', KILLED' if r['killed'] else ''} |",
              flush=True)


if __name__ == "__main__":
    main()
