"""Color points: what a user says about a picture's colors, read and checked.

Two forms say the same thing:

- JSON, ``{"points": [{"x": 0.31, "y": 0.62, "color": "#8a3b2c"}]}``: x and y
  are fractions (0 to 1) of the upright picture's width and height, so one
  file fits the picture at any size; color is sRGB hex. A point sets the
  chroma there and the lightness stays the picture's own.
- A transparent PNG of any size, whose opaque pixels are color strokes (what a
  paint program makes): it is scaled to the picture, and every stroke pixel is
  a point of its color.

Anything else is a HintError that says what is wrong and where; reading
never changes the file. guide.py turns hints into a result.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MAX_POINTS = 500           # JSON points; a PNG's strokes are a mask and have no count
MAX_JSON_BYTES = 1 << 20   # 500 points take some 25 kB; anything near this is not a hints file
MAX_PNG_PIXELS = 64 << 20  # a stroke layer the size of a 64 MP scan, and no bigger
STROKE_ALPHA = 128         # a PNG pixel at least this opaque is a stroke

_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_KEYS = {"x", "y", "color"}


class HintError(ValueError):
    """A hints file or body that cannot be used, with the reason."""


@dataclass(frozen=True)
class Hints:
    """Points (fractions of the upright picture) with their sRGB colors, and/or a stroke layer."""

    xs: np.ndarray = field(default_factory=lambda: np.zeros(0))               # (n,) in [0, 1]
    ys: np.ndarray = field(default_factory=lambda: np.zeros(0))               # (n,) in [0, 1]
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))  # (n, 3) uint8 sRGB
    strokes: Image.Image | None = None                                        # RGBA, any size

    def __len__(self) -> int:
        return len(self.xs)

    def __bool__(self) -> bool:
        return len(self.xs) > 0 or self.strokes is not None

    def describe(self) -> str:
        """For a log line: "3 color points", "a stroke layer of 640x480"."""
        said = [f"{len(self)} color point{'s' if len(self) != 1 else ''}"] if len(self) else []
        if self.strokes is not None:
            said.append(f"a stroke layer of {self.strokes.width}x{self.strokes.height}")
        return " and ".join(said) or "no color points"

    def to_json(self) -> str:
        pts = [{"x": round(float(x), 6), "y": round(float(y), 6), "color": "#%02x%02x%02x" % tuple(int(v) for v in c)}
               for x, y, c in zip(self.xs, self.ys, self.colors)]
        return json.dumps({"points": pts})


def parse_hints(data: bytes | str | dict) -> Hints:
    """The JSON form (its text or the decoded object) -> Hints, or a HintError saying what is wrong."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_JSON_BYTES:
            raise HintError(f"hints JSON is {len(data)} bytes; at most {MAX_JSON_BYTES} are read")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HintError(f"hints JSON is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise HintError(f"hints are not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, dict):
        raise HintError('hints must be a JSON object like {"points": [{"x": 0.5, "y": 0.5, "color": "#rrggbb"}]}')
    extra = sorted(set(data) - {"points"})
    if extra:
        raise HintError(f"unknown key {extra[0]!r} in hints; the only key is \"points\"")
    points = data.get("points")
    if not isinstance(points, list):
        raise HintError('hints need "points": a list of {"x", "y", "color"}')
    if len(points) > MAX_POINTS:
        raise HintError(f"{len(points)} color points; at most {MAX_POINTS} are taken")
    xs, ys, colors = [], [], []
    for i, p in enumerate(points):
        where = f"point {i + 1}"
        if not isinstance(p, dict):
            raise HintError(f'{where} is not an object like {{"x": 0.5, "y": 0.5, "color": "#rrggbb"}}')
        unknown = sorted(set(p) - _KEYS)
        if unknown:
            raise HintError(f"{where}: unknown key {unknown[0]!r}; a point has x, y and color")
        missing = sorted(_KEYS - set(p))
        if missing:
            raise HintError(f"{where}: no {missing[0]!r}")
        for k in ("x", "y"):
            v = p[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise HintError(f"{where}: {k} must be a number from 0 to 1, got {v!r}")
            if not 0 <= v <= 1:
                raise HintError(f"{where}: {k} = {v} is outside the picture (0 to 1 of its "
                                f"{'width' if k == 'x' else 'height'})")
        c = p["color"]
        if not isinstance(c, str) or not _HEX.fullmatch(c):
            raise HintError(f"{where}: color must be sRGB hex like \"#8a3b2c\", got {c!r}")
        xs.append(float(p["x"]))
        ys.append(float(p["y"]))
        colors.append([int(c[j:j + 2], 16) for j in (1, 3, 5)])
    return Hints(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64),
                 np.asarray(colors, dtype=np.uint8).reshape(-1, 3))


def read_strokes(data: bytes) -> Hints:
    """A stroke PNG's bytes -> Hints holding its stroke layer, or a HintError."""
    try:
        im = Image.open(io.BytesIO(data))
        if im.format != "PNG":
            raise HintError(f"a hints image must be a PNG, this is {im.format or 'not an image'}")
        if im.width * im.height > MAX_PNG_PIXELS:
            raise HintError(f"hints PNG is {im.width}x{im.height}; at most {MAX_PNG_PIXELS >> 20} MP are read")
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        im = im.convert("RGBA")
    except HintError:
        raise
    except Exception as e:  # Pillow's errors for a truncated or foreign file are of many types
        raise HintError(f"hints PNG cannot be read: {e}") from None
    if not has_alpha:
        raise HintError("hints PNG has no transparency: its opaque pixels are the strokes, so the rest must be "
                        "transparent")
    if np.asarray(im.getchannel("A")).max() < STROKE_ALPHA:
        raise HintError("hints PNG has no opaque pixels, so it says no colors")
    return Hints(strokes=im)


def load_hints(path: str | Path) -> Hints:
    """NAME_hints.json or NAME_hints.png -> Hints; a HintError for anything else, naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".png"):
        raise HintError(f"{path.name}: hints are a .json or a .png file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1) if suffix == ".json" else f.read()
    except OSError as e:
        raise HintError(f"{path.name}: cannot be read ({e.strerror or e})") from None
    try:
        return parse_hints(data) if suffix == ".json" else read_strokes(data)
    except HintError as e:
        raise HintError(f"{path.name}: {e}") from None
