"""The inbox sidecar: NAME_hints.json / NAME_hints.png beside NAME_before.EXT, its color points.

Which hints file belongs to a picture (the rules in core/names.py: same NAME,
the _hints marker in any case), and taking it with the picture when the
picture is claimed, under its ticket (spool.py), so that both end together in
done/ or failed/, and a crash between leaves nothing that recovery cannot
put back together.

A hints file that arrives alone re-colors its picture when done/ keeps it
(kept_picture: the picture is claimed back from done/ with the hints, and its
new result takes the next free name, NAME_after-1.EXT, beside the earlier
one); one whose picture is still being written waits for it; one that matches
no picture waits (Waiting: listed by `reverser status`) and is refused after
[retrain] pair_timeout_minutes, as a training half alone is. Where a json and a png both wait, both are taken: the json
gives the points, the png the strokes (see merged_hints).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from unet.hints import Hints, load_hints

from ...core.fs import local_iso
from ...core.namebytes import shown
from ...core.names import hints_names, hints_stem, is_input

_NUMBERED = re.compile(r"-\d+(?=\.[^.]*$)")   # done/'s NAME_before-2.jpg: the second drop of NAME_before.jpg


def hints_beside(inbox: Path, input_name: str) -> list[Path]:
    """The hints files in inbox for the picture input_name (json before png); [] when none waits."""
    found, seen = [], set()
    for name in hints_names(input_name):
        path = inbox / name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen and os.path.isfile(path):
            seen.add((st.st_dev, st.st_ino))   # a case-insensitive inbox answers every spelling
            found.append(path)
    return found


def claim_hints(spool, item):
    """Take item's hints files out of its inbox beside it, under its ticket (Spool.take_companions: one
    atomic rename each, a file gone meanwhile skipped). item with them as its companions."""
    return spool.take_companions(item, hints_beside(spool.inbox, item.name))


def merged_hints(paths: list[Path]) -> Hints | None:
    """The color points of all the given hints files together: a json's points and a png's strokes in
    one Hints (HintError, with its reason, from the first file that cannot be read); None for no files."""
    if not paths:
        return None
    read = [load_hints(path) for path in paths]
    strokes = next((h.strokes for h in read if h.strokes is not None), None)
    return Hints(xs=np.concatenate([h.xs for h in read]), ys=np.concatenate([h.ys for h in read]),
                 colors=np.concatenate([h.colors for h in read]).astype(np.uint8), strokes=strokes)


def picture_waits(inbox: Path, stem: str) -> bool:
    """Whether a picture of this stem is in the inbox (still being written, or not yet taken)."""
    try:
        return any(is_input(e.name) and hints_stem(e.name) == stem for e in os.scandir(inbox))
    except OSError:
        return False


def kept_picture(done_dir: Path, stem: str) -> tuple[Path, str] | None:
    """The newest input of this stem that done/ keeps, and the name it was dropped under; None if none."""
    found = []
    try:
        for e in os.scandir(done_dir):
            name = _NUMBERED.sub("", e.name, count=1)
            if is_input(name) and hints_stem(name) == stem and e.is_file(follow_symlinks=False):
                found.append((e.stat(follow_symlinks=False).st_mtime_ns, e.name, name))
    except OSError:
        return None
    if not found:
        return None
    _, on_disk, name = max(found)
    return done_dir / on_disk, name


class Waiting:
    """The hints files of one queue that match no picture: since when (this run; a restart starts the timeout
    again, never refuses early), for `reverser status`, and which have waited past the timeout."""

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self.timeout_s, self.clock = timeout_s, clock
        self._since: dict[Path, float] = {}
        self._lock = threading.Lock()

    def wait(self, path: Path) -> float:
        """path waits (again); how long it has waited."""
        now = self.clock()
        with self._lock:
            return now - self._since.setdefault(path, now)

    def gone(self, path: Path) -> None:
        with self._lock:
            self._since.pop(path, None)

    def listing(self, limit: int) -> tuple[int, list[dict]]:
        """How many wait, and the limit oldest, each with since when and how long until it is refused."""
        with self._lock:
            items = [(p, t) for p, t in self._since.items() if os.path.lexists(p)]
        now, wall = self.clock(), time.time()
        out = [{"name": shown(p.name), "waits_for": shown(f"{hints_stem(p.name)}_before.*"),
                "since": local_iso(wall - (now - t)), "waited_seconds": round(now - t),
                "refused_in_seconds": round(max(0.0, self.timeout_s - (now - t)))}
               for p, t in sorted(items, key=lambda pt: pt[1])[:limit]]
        return len(items), out
