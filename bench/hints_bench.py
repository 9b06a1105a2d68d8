"""Color points on real pairs: how much a few points buy, and what they cost against a conversion without.

    python bench/hints_bench.py [--pairs DIR] [--points 0,3,10] [--limit N] [--model DIR] [--speed-only]
                                [--pipeline N]

The simulated user is the one of docs/color-points.md: at 192 px on the long
side, in Lab, the ab error of the automatic result box-filtered 5x5 with the
border zeroed; k times the maximum, the truth's 3x3 mean color there, and a
21x21 square zeroed around it. For each k it prints the full-size PSNR, the
ab AuC and the share of points obeyed (the result's ab within 10 of the asked
color, at 192 px), then the time of one picture's conversion in-process
(Predictor.predict) with 3 points against the same picture without, medians
over the same run. The last line gives the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import uniform_filter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unet import Predictor  # noqa: E402
from unet.hints import parse_hints  # noqa: E402
from unet.metrics import AbAuc, psnr, rgb_to_ab  # noqa: E402

LONG = 192


def small_ab(im: Image.Image) -> np.ndarray:
    """(h, w, 2) Lab ab at LONG px on the long side."""
    s = LONG / max(im.size)
    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    return rgb_to_ab(np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.float64))


def simulated_points(auto: Image.Image, truth: Image.Image, k: int) -> dict:
    """The hints JSON a user who fixes the worst places first would give (see the module docstring)."""
    t = truth.convert("RGB")
    s = LONG / max(t.size)
    size = (max(1, round(t.width * s)), max(1, round(t.height * s)))
    small = np.asarray(t.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    err = np.hypot(*(small_ab(auto) - rgb_to_ab(small)).transpose(2, 0, 1))
    err = uniform_filter(err, 5)
    err[:2], err[-2:], err[:, :2], err[:, -2:] = 0, 0, 0, 0
    h, w = err.shape
    points = []
    for _ in range(k):
        r, c = np.unravel_index(np.argmax(err), err.shape)
        rgb = small[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, 3).mean(0)
        points.append({"x": (c + 0.5) / w, "y": (r + 0.5) / h,
                       "color": "#" + "".join(f"{int(round(v)):02x}" for v in rgb)})
        err[max(r - 10, 0):r + 11, max(c - 10, 0):c + 11] = 0
    return {"points": points}


def obeyed(result: Image.Image, points: list[dict]) -> list[bool]:
    ab = small_ab(result)
    h, w = ab.shape[:2]
    out = []
    for p in points:
        want = rgb_to_ab(np.array([int(p["color"][i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64))
        got = ab[min(int(p["y"] * h), h - 1), min(int(p["x"] * w), w - 1)]
        out.append(bool(np.hypot(*(got - want)) <= 10.0))
    return out


def pairs(folder: Path, limit: int) -> list[tuple[Path, Path]]:
    found = []
    for before in sorted(folder.glob("*_before.*")):
        after = next(iter(sorted(folder.glob(before.name.replace("_before.", "_after.").rsplit(".", 1)[0] + ".*"))), None)
        if after is not None:
            found.append((before, after))
    return found[:limit] if limit else found


def quality(predictor: Predictor, found, ks: list[int]) -> dict[int, tuple[float, float, float]]:
    scores = {k: ([], AbAuc(), []) for k in ks}
    for before, after in found:
        gray, truth = Image.open(before), Image.open(after).convert("RGB")
        auto = predictor.predict([gray])[0]
        for k in ks:
            said = simulated_points(auto, truth, k)
            out = predictor.predict([gray], hints=[parse_hints(said)])[0] if k else auto
            ps, auc, ok = scores[k]
            ps.append(psnr(out, truth))
            auc.add(out, truth)
            ok += obeyed(out, said["points"])
    return {k: (statistics.mean(ps), auc.score(), 100.0 * (sum(ok) / len(ok) if ok else 1.0))
            for k, (ps, auc, ok) in scores.items()}


def speed(predictor: Predictor, before: Path, after: Path, repeat: int = 20) -> tuple[float, float]:
    """Medians (ms) of one conversion without points and with the simulated user's 3, interleaved."""
    gray = Image.open(before)
    gray.load()
    said = parse_hints(simulated_points(predictor.predict([gray])[0], Image.open(after), 3))
    plain, hinted = [], []
    for _ in range(repeat + 2):
        for out, hints in ((plain, None), (hinted, [said])):
            t = time.perf_counter()
            predictor.predict([gray], hints=hints)
            out.append(1000.0 * (time.perf_counter() - t))
    return statistics.median(plain[2:]), statistics.median(hinted[2:])


def through_pipeline(predictor: Predictor, found, rounds: int = 4) -> tuple[float, float]:
    """Seconds (medians, the first round left out) for the pairs' grays through reverser convert's pipeline
    (decode and encode threads beside the forward pass, results written), without points and with the
    simulated user's 3 beside each (NAME_hints.json), interleaved round by round."""
    import json
    import shutil
    import tempfile

    from loguru import logger

    from daemon.commands.convert import convert_files
    from daemon.core.config import parse_config

    logger.remove()   # the pipeline's own lines; each file's line still goes to stderr

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        queue = {"task": "colorize", "model": str(predictor.model.path)}
        cfg = parse_config({"runtime": {"max_batch": 1}, "queues": {"colorize": queue}}, base=tmp)
        folders = {"plain": tmp / "plain", "hinted": tmp / "hinted"}
        for d in folders.values():
            d.mkdir()
        for before, after in found:
            for d in folders.values():
                shutil.copy(before, d / before.name)
            auto = predictor.predict([Image.open(before)])[0]
            stem = before.name.rsplit("_before", 1)[0]
            said = simulated_points(auto, Image.open(after), 3)
            (folders["hinted"] / f"{stem}_hints.json").write_text(json.dumps(said))
        times = {name: [] for name in folders}
        for _ in range(rounds):
            for name, d in folders.items():
                out = tmp / f"out-{name}-{len(times[name])}"
                out.mkdir()
                inputs = sorted(p for p in d.iterdir() if "_before" in p.name)
                t = time.perf_counter()
                convert_files(predictor, inputs, cfg, out, "colorize")
                times[name].append(time.perf_counter() - t)
    return statistics.median(times["plain"][1:]), statistics.median(times["hinted"][1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, default=ROOT.parent / "shared" / "data" / "plates" / "val")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "colorize")
    ap.add_argument("--points", default="0,3,10")
    ap.add_argument("--limit", type=int, default=0, help="the first N pairs only")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", type=int, default=0, metavar="N",
                    help="also time N pairs through reverser convert's pipeline, with 3 points each and without")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    found = pairs(args.pairs, args.limit)
    if not found:
        sys.exit(f"hints_bench: no NAME_before/NAME_after pairs in {args.pairs}")
    predictor = Predictor(args.model, device="cpu", max_batch=1)
    said = []
    if not args.speed_only:
        for k, (p, auc, ok) in quality(predictor, found, [int(k) for k in args.points.split(",")]).items():
            print(f"{k:>3} points: PSNR {p:.2f} dB, ab AuC {auc:.1f}, obeyed {ok:.0f}%")
            said.append(f"{k} points {p:.2f} dB / AuC {auc:.1f} / {ok:.0f}% obeyed")
    plain, hinted = speed(predictor, *found[0])
    w, h = Image.open(found[0][0]).size
    print(f"one {w}x{h} picture, in-process: {plain:.1f} ms without points, {hinted:.1f} ms with 3")
    if args.pipeline:
        alone, with_points = through_pipeline(predictor, found[:args.pipeline])
        print(f"{args.pipeline} pairs through the pipeline: {alone:.2f} s without points, {with_points:.2f} s "
              f"with 3 each ({with_points / alone:.2f}x)")
    print(f"{len(found)} pairs: " + "; ".join(said) + (", " if said else "")
          + f"with 3 points {hinted / plain:.2f}x a conversion ({w}x{h})")


if __name__ == "__main__":
    main()
