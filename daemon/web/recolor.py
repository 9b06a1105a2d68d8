"""Color points on a done file: the live view (preview) and the full-size re-color (apply).

    POST /api/files/{id}/preview  {"points": [...]}  -> the working-size picture with the points, a PNG
    POST /api/files/{id}/hints    {"points": [...]}  -> 202 {id, url}: a new file, colored full size

A preview runs the queue's current model once per picture and keeps its
propagation (unet.guide.Guide) for the next few requests (an LRU of GUIDES), so
a point added or dragged costs one live solve (Guide.solve(live=True)), a few
milliseconds. It reads the picture's thumbnail (thumbs.py: made once, its
decode within the memory budget), the kept input where done/ has it, else the
result. The re-color is an upload like any other: a copy of the kept input is
entered into the inbox under a free name with its hints placed first
(moves.upload's contract), so the service colors it as it would a dropped pair,
and the earlier file and its result stay as they were.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from typing import Callable

from PIL import Image

from unet.hints import HintError, parse_hints

from .ondisk import Refused
from .thumbs import Unreadable, thumbnail

GUIDES = 4   # pictures whose propagation is kept: a person works on one at a time, a few tabs at most


class Previews:
    """The live views of one web server: the Guides of the last GUIDES pictures, made once each."""

    def __init__(self):
        self._guides: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[tuple, threading.Lock] = {}

    def render(self, ctx, rid: str, body: bytes) -> tuple[bytes, dict[str, float]]:
        """The PNG of rid's picture colored with body's points (none: the automatic colors), and where its
        time went (ms: guide, solve, png) for a Server-Timing header."""
        try:
            hints = parse_hints(body) if body.strip() else parse_hints(b'{"points": []}')
        except HintError as e:
            raise Refused(400, f"bad hints: {e}") from None
        t0 = time.perf_counter()
        guide = self._guide(ctx, rid)
        t1 = time.perf_counter()
        chroma = guide.solve(hints, live=True)
        t2 = time.perf_counter()
        out = io.BytesIO()
        guide.picture(chroma).save(out, "PNG", compress_level=1)
        t3 = time.perf_counter()
        return out.getvalue(), {"guide": (t1 - t0) * 1e3, "solve": (t2 - t1) * 1e3, "png": (t3 - t2) * 1e3}

    def _guide(self, ctx, rid: str):
        rec = ctx.index.records.get(rid)
        if rec is None or rec["state"] != "done":
            raise Refused(404, "no done file with this id")
        q = rec["queue"]
        if q not in ctx.cfg.queues or ctx.cfg.queues[q].task != "colorize":
            raise Refused(409, f"queue {q!r} does not colorize: color points are for colorize queues")
        predictor = _predictor(ctx, q)
        key = (rid, str(predictor.version))
        with self._lock:
            if key in self._guides:
                self._guides.move_to_end(key)
                return self._guides[key]
            making = self._making.setdefault(key, threading.Lock())
        with making:   # one request builds it; the others find it built
            with self._lock:
                if key in self._guides:
                    return self._guides[key]
            guide = predictor.guide_for(_source(ctx, rid))
            with self._lock:
                self._guides[key] = guide
                self._making.pop(key, None)
                while len(self._guides) > GUIDES:
                    self._guides.popitem(last=False)
            return guide


def _predictor(ctx, q: str):
    find: Callable | None = ctx.predictor
    predictor = find(q) if find is not None else None
    if predictor is None:
        raise Refused(503, "no model is serving in this process (the web runs without the service?)")
    return predictor


def _source(ctx, rid: str) -> Image.Image:
    """The picture a live view starts from: the thumbnail of the kept input, else of the result."""
    for which, opener in (("before", ctx.index.before), ("after", ctx.index.result)):
        opened = opener(rid)
        if opened is None:
            continue
        try:
            path = thumbnail(ctx.cfg.paths.state / "web" / "thumbs", f"{rid}-{which}", opened,
                             ctx.cfg.limits.max_pixels, ctx.memory)
        except Unreadable:
            continue
        with Image.open(path) as im:
            return im.convert("RGB") if which == "before" else im.convert("L").convert("RGB")
    raise Refused(409, "neither this file's input nor its result can be read any more")
