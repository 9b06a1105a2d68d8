"""Model throughput: forward-only images/s by batch size, and whole `reverser convert` images/s.

    python bench/model_bench.py [--queue colorize] [--images 40] [--large 12] [--device cpu]

Images are 256x384 (the plates' size), generated here. The forward-only
figure is the network alone at the model's working size; the convert figure
is the whole command as a user runs it (process start, model load, decode,
network, full-size recombination, encode, write), on the same images, and
again on --large generated 4000x3000 JPEGs (12 MP: there the full-size work,
not the network, is most of the time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.images import make_image  # noqa: E402
from unet import Predictor, load_model  # noqa: E402
from unet.model import count_parameters  # noqa: E402


def forward_rate(pred: Predictor, image: Image.Image, batch: int, seconds: float = 3.0) -> float:
    """Images/s of the network alone at this batch size (median of timed repeats)."""
    item = pred.prepare(image)
    items = [item] * batch
    pred.run(items)  # warm-up
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t = time.perf_counter()
        pred.run(items)
        if pred.cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def gflop(pred: Predictor, image: Image.Image) -> float:
    """Forward GFLOP for one image, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = pred.prepare(image).x[None].to(pred.device)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        pred.net(x)
    return fc.get_total_flops() / 1e9


def convert_rate(queue: str, n: int, size=(256, 384)) -> tuple[float, float]:
    """Images/s of `reverser convert` on n generated images: (whole process, excluding start-up)."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for i in range(n):
            make_image(d / "in" / f"img{i}_before.jpg", size, "L" if queue == "colorize" else "RGB", seed=i)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "daemon", "convert", "--config", str(ROOT / "config.toml"),
               "--queue", queue, "-o", str(d / "out")]
        # One image first: the fixed cost of starting Python, torch and the model.
        t = time.perf_counter()
        subprocess.run(cmd + [str(d / "in" / "img0_before.jpg")], check=True, env=env, capture_output=True)
        startup = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(cmd + [str(d / "in")], check=True, env=env, capture_output=True)
        whole = time.perf_counter() - t
    return n / whole, n / max(whole - startup, 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queue", choices=["colorize", "reverse"], default=None, help="default: both")
    ap.add_argument("--images", type=int, default=40, help="images for the convert figure")
    ap.add_argument("--large", type=int, default=12, help="4000x3000 images for the full-size convert figure")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="forward-only figures of these model folders instead (each in turn, in this run)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device} ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})")
    folders = [(f, None) for f in args.model] or [(ROOT / "models" / q, q) for q in
                                                  ([args.queue] if args.queue else ["colorize", "reverse"])]
    for folder, queue in folders:
        model = load_model(folder)
        pred = Predictor(model, device=args.device, max_batch=16)
        mode = "L" if model.task.name == "colorize" else "RGB"
        image = Image.new(mode, (256, 384), 128)
        h, w = pred.prepare(image).key
        print(f"\n{queue or folder}: {count_parameters(model.net) / 1e6:.2f} M parameters, working size {w}x{h}, "
              f"{gflop(pred, image):.2f} GFLOP per 256x384 image")
        print("  batch  images/s  ms/image")
        for b in (int(x) for x in args.batches.split(",")):
            r = forward_rate(pred, image, b)
            print(f"  {b:5d}  {r:8.1f}  {1000 / r:8.1f}")
        if queue is None:
            continue
        whole, steady = convert_rate(queue, args.images)
        print(f"  reverser convert, {args.images} images 256x384: {whole:.1f} images/s whole process, "
              f"{steady:.1f} images/s after start-up")
        if args.large:
            whole, steady = convert_rate(queue, args.large, (4000, 3000))
            print(f"  reverser convert, {args.large} JPEGs 4000x3000: {whole:.2f} images/s whole process, "
                  f"{steady:.2f} images/s after start-up")


if __name__ == "__main__":
    main()
