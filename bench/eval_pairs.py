"""Score a model on a folder of pairs and draw a before / result / truth contact sheet.

    python bench/eval_pairs.py models/colorize PAIRS_DIR [--sheet out.png] [--rows 8]

Prints the model's mean PSNR, colorfulness and ab AuC beside the gray and mean-tint
baselines (the figures in the README come from here).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unet import Predictor, load_model  # noqa: E402
from unet.data import find_pairs, load_pair  # noqa: E402
from unet.scores import evaluate  # noqa: E402


def contact_sheet(columns: list[list[Image.Image]], labels: list[str], height: int = 192) -> Image.Image:
    """A grid: one column per pair, one labelled row per image kind, all scaled to one height."""
    scaled = [[im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in col]
              for col in columns]
    pad, left = 4, 60
    widths = [col[0].width for col in scaled]
    sheet = Image.new("RGB", (left + sum(widths) + pad * len(widths), len(labels) * (height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, label in enumerate(labels):
        y = pad + r * (height + pad)
        draw.text((4, y + height // 2 - 6), label, fill="black")
        x = left
        for col, w in zip(scaled, widths):
            sheet.paste(col[r], (x, y))
            x += w + pad
    return sheet


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    model = load_model(args.model)
    pairs = find_pairs([args.pairs])
    scores = evaluate(model, pairs).as_dict()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in scores.items()}, indent=2))
    if args.sheet:
        pred = Predictor(model, device="cpu")
        step = max(1, len(pairs) // args.rows)
        columns = []
        for p in pairs[::step][: args.rows]:
            before, after = load_pair(p)
            columns.append([before, pred.predict([before])[0], after])
        contact_sheet(columns, ["before", "result", "truth"]).save(args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
