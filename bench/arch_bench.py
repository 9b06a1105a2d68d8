"""The colorize network's size against its cost: parameters, GFLOP and CPU ms per image.

    python bench/arch_bench.py [--threads N] [--seconds 3]

Each candidate is a freshly initialised network (speed does not depend on the
weights) run on one 256x384 plate's working-size input (128x192 luminance),
batch 1, forward only, under torch.inference_mode: the cost the service pays
per image. The shipped recipe (unet.recipe) is marked with *.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet.model import UNet, count_parameters  # noqa: E402
from unet.recipe import recipe  # noqa: E402

WIDTHS = [(8, 16, 32, 64), (16, 32, 64, 128), (24, 48, 96, 192), (32, 64, 128, 256),
          (8, 16, 32, 64, 128), (16, 32, 64, 128, 256), (24, 48, 96, 192, 384)]


def ms_per_image(net: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        net(x)
        times, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def gflop(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x)
    return fc.get_total_flops() / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per candidate")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task, shipped = recipe("colorize")
    shipped = replace(shipped, in_channels=1, out_channels=2 + task.bins_per_axis ** 2)
    x = torch.rand(1, 1, 128, 192)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; input 1x128x192 "
          f"(a 256x384 plate at the colorize working size), batch 1")
    print("  widths                     params   GFLOP   ms/image")
    for widths in WIDTHS:
        cfg = replace(shipped, widths=widths)
        net = UNet(cfg).eval()
        mark = "*" if cfg == shipped else " "
        print(f"{mark} {'-'.join(map(str, widths)):24s} {count_parameters(net) / 1e6:6.2f} M "
              f"{gflop(net, x):7.2f} {ms_per_image(net, x, args.seconds):9.1f}")


if __name__ == "__main__":
    main()
