"""A training run's report folder: report.json (scores, decision) and report.png (to look at).

The picture has the learning curves (loss; validation PSNR at working size)
and a contact sheet of a few held-out pairs: before, champion, challenger,
truth. It is drawn with Pillow's ImageDraw: two line charts do not justify
matplotlib as a dependency of a service.
"""

from __future__ import annotations

import math
import shutil
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..core.fs import numbered, write_json
from .challenger import RESULT, SHEET

BG, INK, GRID, MUTED = (255, 255, 255), (30, 30, 30), (225, 225, 225), (120, 120, 120)
COLORS = {"train loss": (31, 119, 180), "val loss": (255, 127, 14), "val PSNR": (44, 160, 44),
          "start": (150, 150, 150)}
COLUMNS = ("before", "champion", "challenger", "truth")


def new_report_dir(reports_root: Path) -> Path:
    """<reports>/<queue>/2025-11-25T03-00-12/ (a suffix when two runs start in one second)."""
    stamp = datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    reports_root.mkdir(parents=True, exist_ok=True)
    for name in numbered(stamp, first=2, split_ext=False):
        path = reports_root / name
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{reports_root}: no free report folder name for {stamp}")


def write_report_json(folder: Path, data: dict) -> Path:
    path = Path(folder) / "report.json"
    write_json(path, data)
    return path


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def ticks(lo: float, hi: float, most: int = 6) -> list[tuple[float, str]]:
    """Round values between lo and hi, a step of 1, 2 or 5 times a power of ten apart, with their labels.

    A validation PSNR that moves from 28.01 to 28.09 dB gets 28.02, 28.04 ... rather than
    five labels that all read "28": the step, not the values, says how many decimals to show.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [(lo, tick_labels([lo], 0)[0])]
    raw = (hi - lo) / max(1, most - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    values = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return list(zip(values, tick_labels(values, step)))


def tick_labels(values: list[float], step: float) -> list[str]:
    """values written with as many decimals as step needs (none for a step of 1 or more), so each reads apart."""
    decimals = 0 if step <= 0 or step >= 1 else -math.floor(math.log10(step) + 1e-9)
    if step > 0 and round(step, decimals) != round(step, decimals + 1):
        decimals += 1  # a step of 0.25 needs two decimals, not one
    return [f"{0.0 if abs(v) < step * 1e-6 else v:.{decimals}f}" for v in values]


def _chart(d: ImageDraw.ImageDraw, box, title: str, series: list[tuple[str, list, list]], font) -> None:
    """A line chart in box=(x0, y0, x1, y1): series are (label, xs, ys); points that are None are skipped."""
    x0, y0, x1, y1 = box
    d.text((x0, y0), title, fill=INK, font=font)
    px0, py0, px1, py1 = x0 + 56, y0 + 22, x1 - 8, y1 - 34
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
    d.rectangle((px0, py0, px1, py1), outline=GRID)
    if not pts:
        d.text((px0 + 8, py0 + 8), "no data", fill=MUTED, font=font)
        return
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    if xmax == xmin:
        xmax = xmin + 1
    pad = (ymax - ymin) * 0.08 or abs(ymax) * 0.05 or 1.0
    ymin, ymax = ymin - pad, ymax + pad

    def at(x, y):
        return (px0 + (x - xmin) / (xmax - xmin) * (px1 - px0), py1 - (y - ymin) / (ymax - ymin) * (py1 - py0))

    for v, label in ticks(ymin, ymax):  # horizontal grid lines with their values
        _, gy = at(xmin, v)
        d.line((px0, gy, px1, gy), fill=GRID)
        d.text((px0 - 4 - d.textlength(label, font=font), gy - 6), label, fill=MUTED, font=font)
    [first, last] = tick_labels([xmin, xmax], xmax - xmin)
    d.text((px0, py1 + 4), first, fill=MUTED, font=font)
    last += " s"
    d.text((px1 - d.textlength(last, font=font), py1 + 4), last, fill=MUTED, font=font)
    lx = px0
    for label, xs, ys in series:
        color = COLORS.get(label, INK)
        line = [at(x, y) for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
        if len(line) > 1:
            d.line(line, fill=color, width=2)
        for cx, cy in line:
            d.ellipse((cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5), fill=color)
        d.line((lx, y1 - 10, lx + 16, y1 - 10), fill=color, width=3)
        d.text((lx + 20, y1 - 17), label, fill=INK, font=font)
        lx += 28 + int(d.textlength(label, font=font))


def _thumb(im: Image.Image, height: int) -> Image.Image:
    im = im.convert("RGB")
    w = max(1, round(im.width * height / im.height))
    return im.resize((w, height), Image.Resampling.LANCZOS)


def draw_report(path: Path, header: list[str], history: list[dict],
                rows: list[tuple[str, list[Image.Image]]], thumb_height: int = 128) -> Path:
    """Write report.png: header lines, learning curves from history, contact sheet rows (name, 4 images)."""
    font, big = _font(13), _font(16)
    thumbs = [(name, [_thumb(im, thumb_height) for im in ims]) for name, ims in rows]
    cell = max([t.width for _, ims in thumbs for t in ims] + [thumb_height])
    pad = 12
    width = max(760, pad + len(COLUMNS) * (cell + pad))
    header_h = pad + 22 + 18 * (len(header) - 1) + pad
    chart_h = 230
    sheet_h = (24 + len(thumbs) * (thumb_height + 20 + pad)) if thumbs else 0
    img = Image.new("RGB", (width, header_h + chart_h + pad + sheet_h + pad), BG)
    d = ImageDraw.Draw(img)

    y = pad
    for i, line in enumerate(header):
        d.text((pad, y), line, fill=INK, font=big if i == 0 else font)
        y += 22 if i == 0 else 18
    y = header_h
    secs = [h.get("seconds") for h in history]
    half = (width - 3 * pad) // 2
    _chart(d, (pad, y, pad + half, y + chart_h), "loss", [
        ("train loss", secs, [h.get("train_loss") for h in history]),
        ("val loss", secs, [h.get("val_loss") for h in history])], font)
    _chart(d, (2 * pad + half, y, width - pad, y + chart_h), "validation PSNR, dB (working size)", [
        ("val PSNR", secs, [h.get("val_psnr") for h in history])], font)
    y += chart_h + pad

    if thumbs:
        for c, label in enumerate(COLUMNS):
            d.text((pad + c * (cell + pad), y), label, fill=INK, font=big)
        y += 24
        for name, ims in thumbs:
            for c, t in enumerate(ims):
                img.paste(t, (pad + c * (cell + pad), y))
            d.text((pad, y + thumb_height + 3), name, fill=MUTED, font=font)
            y += thumb_height + 20 + pad
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def finish_report(report: Path, data: dict, outcome, result: dict, task: str) -> None:
    """Write report.json and report.png for a finished run (outcome: a promotion.TrainingOutcome), then tidy the folder."""
    data.update(decision=outcome.decision, why=outcome.why, version=outcome.version,
                champion_after=outcome.champion, challenger=result.get("metrics"),
                champion=result.get("champion_metrics"), pairs=result.get("pairs"),
                train_pairs=result.get("train_pairs"), val_pairs=result.get("val_pairs"),
                val_names=result.get("val_names"), data_fingerprint=result.get("data_fingerprint"),
                stopped=result.get("stopped"), train_seconds=result.get("train_seconds"),
                budget=result.get("budget"),
                history=result.get("history", []))
    write_report_json(report, data)
    rows = []
    for row in result.get("sheet") or []:
        rows.append((row["name"], [Image.open(report / SHEET / row[k]) for k in COLUMNS]))
    draw_report(report / "report.png", _header(data, outcome, task), data["history"], rows)
    shutil.rmtree(report / SHEET, ignore_errors=True)
    (report / RESULT).unlink(missing_ok=True)  # folded into report.json


def _header(data: dict, outcome, task: str) -> list[str]:
    v = f"version {outcome.version}" if outcome.version else "challenger"
    lines = [f"{data['queue']} ({task}): {v} {outcome.decision.upper()}  -  {data['finished'][:16].replace('T', ' ')}"]
    words, line = outcome.why.split(), ""
    for w in words:  # wrap the reason at about 110 characters
        if len(line) + len(w) > 110:
            lines.append(line)
            line = ""
        line += ("" if not line else " ") + w
    lines.append(line)
    ch, champ = data.get("challenger"), data.get("champion")
    if ch:
        lines.append(f"held-out pairs: {data['val_pairs']}, training pairs: {data['train_pairs']}, "
                     f"trained {data['train_seconds']} s ({data['stopped']}); champion before: "
                     f"version {data['champion_before']}")
        lines.append("challenger: " + _scores(ch) + ("   champion: " + _scores(champ) if champ else ""))
    rule = data.get("rule")
    if rule:
        lines.append(rule_line(rule))
    return lines


def rule_line(rule: dict) -> str:
    """The promotion rule and its figures, in one line (report.png; reverser train prints it too)."""
    line = (f"rule: gain of at least {rule['margin_db']:g} dB with {rule['confidence']:.0%} confidence over "
            f"at least {rule['min_holdout_pairs']} held-out pairs ({rule['held_out_pairs']} here)")
    paired = rule.get("paired")
    if paired:
        line += (f"; per-image gain: mean {paired['mean_db']:+.2f} dB, at least {paired['lower_db']:+.2f} dB, "
                 f"better on {paired['better']} of {paired['pairs']}")
    return line


def _scores(m: dict) -> str:
    s = f"PSNR {m['psnr']:.2f} dB"
    if "colorfulness" in m and "tint_psnr" in m:
        s += f", colorfulness {m['colorfulness']:.1f} (truth {m['truth_colorfulness']:.1f})"
    if "auc" in m:
        s += f", ab AuC {m['auc']:.1f}" + (f" (gray {m['gray_auc']:.1f})" if "gray_auc" in m else "")
    return s
