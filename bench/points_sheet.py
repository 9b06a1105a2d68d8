"""What three color points do, for a person to look at: gray / automatic / 3 points (marked) / the truth.

    python bench/points_sheet.py [--model DIR] [--pairs DIR] [--plates 6] --sheet docs/points.jpg

One column per picture: some plates of --pairs (every n-th, so kinds differ)
and the color photographs scikit-image ships (bench/photo_sheet.py). The 3
points are the simulated user's of docs/color-points.md (the worst places of
the automatic result, the truth's color there), drawn as rings on the third
row. Prints each picture's PSNR and ab AuC without and with the points.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from eval_pairs import contact_sheet  # noqa: E402
from hints_bench import pairs, simulated_points  # noqa: E402
from photo_sheet import photos  # noqa: E402

from unet import Predictor  # noqa: E402
from unet.hints import parse_hints  # noqa: E402
from unet.metrics import AbAuc, psnr  # noqa: E402


def marked(im: Image.Image, points: list[dict]) -> Image.Image:
    """im with a ring around each point, in the point's color (black and white edges, seen on any ground)."""
    out = im.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    r = max(4, round(max(out.size) / 40))
    for p in points:
        x, y = p["x"] * out.width, p["y"] * out.height
        d.ellipse((x - r - 2, y - r - 2, x + r + 2, y + r + 2), outline="white", width=2)
        d.ellipse((x - r, y - r, x + r, y + r), outline=p["color"], width=max(2, r // 3))
        d.ellipse((x - r + 2, y - r + 2, x + r - 2, y + r - 2), outline="black", width=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "colorize")
    ap.add_argument("--pairs", type=Path, default=ROOT.parent / "shared" / "data" / "plates" / "val")
    ap.add_argument("--plates", type=int, default=6)
    ap.add_argument("--sheet", type=Path, required=True)
    args = ap.parse_args()
    predictor = Predictor(args.model, device="cpu", max_batch=1)
    found = pairs(args.pairs, 0) if args.pairs.is_dir() else []
    step = max(1, len(found) // max(1, args.plates))
    pictures = [(b.stem.rsplit("_before", 1)[0], Image.open(b).convert("L"), Image.open(a).convert("RGB"))
                for b, a in found[::step][:args.plates]]
    pictures += [(name, color.convert("L"), color) for name, color in photos().items()]
    columns, auto_auc, hint_auc = [], AbAuc(), AbAuc()
    for name, gray, truth in pictures:
        auto = predictor.predict([gray])[0]
        said = simulated_points(auto, truth, 3)
        hinted = predictor.predict([gray], hints=[parse_hints(said)])[0]
        auto_auc.add(auto, truth)
        hint_auc.add(hinted, truth)
        print(f"{name}: PSNR {psnr(auto, truth):.2f} -> {psnr(hinted, truth):.2f} dB with 3 points")
        columns.append([gray, auto, marked(hinted, said["points"]), truth])
    print(f"ab AuC over the sheet: {auto_auc.score():.1f} automatic, {hint_auc.score():.1f} with 3 points")
    contact_sheet(columns, ["gray in", "automatic", "3 points", "truth"], height=150).save(args.sheet, quality=88)
    print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
