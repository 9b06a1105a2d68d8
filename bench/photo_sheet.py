"""Ordinary photographs through a colorize model: the sample photos scikit-image ships, gray in, color out.

    python bench/photo_sheet.py models/colorize --sheet docs/photos.png [--compare OLD_MODEL]

The plates are one kind of picture; these show what the model does outside
them (a person, a cat, coffee, a rocket, ...). Each column is one photo:
its gray, the model's result (and an older model's with --compare), the
original. Prints each photo's PSNR, colorfulness and ab AuC beside gray's.
Needs scikit-image (a test dependency), which ships the photos.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_pairs import contact_sheet  # noqa: E402

from unet import Predictor, load_model  # noqa: E402
from unet.metrics import AbAuc, colorfulness, psnr  # noqa: E402

# The color photographs among skimage.data's, in the order shown (those that need a download are skipped).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos() -> dict[str, Image.Image]:
    """name -> RGB image, for each sample photo this scikit-image has on disk."""
    import skimage.data

    out = {}
    for name in PHOTOS:
        try:
            a = getattr(skimage.data, name)()
        except Exception:   # noqa: BLE001: a photo that needs a download (none can be made here) is left out
            continue
        if a.ndim == 3 and a.shape[2] >= 3:
            out[name] = Image.fromarray(a[..., :3])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--sheet", type=Path, help="write the sheet PNG here")
    ap.add_argument("--compare", type=Path, help="a second model, shown in a row of its own")
    args = ap.parse_args()
    models = [("result", Predictor(load_model(args.model), device="cpu"))]
    if args.compare:
        models.append((f"{args.compare.name} (before)", Predictor(load_model(args.compare), device="cpu")))
    columns, rows = [], {}
    aucs = {label: AbAuc() for label, _ in models} | {"gray": AbAuc()}
    for name, color in photos().items():
        gray = color.convert("L")
        results = [p.predict([gray])[0] for _, p in models]
        columns.append([gray, *results, color])
        rows[name] = {label: {"psnr": round(psnr(r, color), 2), "colorfulness": round(colorfulness(r), 1)}
                      for (label, _), r in zip(models, results)}
        rows[name]["gray"] = {"psnr": round(psnr(gray.convert("RGB"), color), 2), "colorfulness": 0.0}
        for (label, _), r in zip(models, results):
            aucs[label].add(r, color)
        aucs["gray"].add(gray, color)
    print(json.dumps({"photos": rows, "ab_auc": {k: round(a.score(), 1) for k, a in aucs.items()}}, indent=1))
    if args.sheet:
        contact_sheet(columns, ["gray in", *[label for label, _ in models], "original"], height=160).save(args.sheet)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
