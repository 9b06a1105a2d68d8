"""The inbox sidecar: NAME_hints.json / NAME_hints.png beside NAME_before.EXT, its color points.

Which hints file belongs to a picture (the rules in core/names.py: same NAME,
the _hints marker in any case), and taking it with the picture when the
picture is claimed, into the same work folder, so that both end together in
done/ or failed/. Where a json and a png both wait, both are taken: the json
gives the points, the png the strokes (see merged_hints).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from unet.hints import Hints, load_hints

from ..core.names import hints_names


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


def claim_hints(spool, inbox: Path, input_name: str, work: Path | None = None) -> list:
    """Take the picture's hints files out of inbox under tickets of spool's, as the picture is
    (Spool.claim, one atomic rename each); a file gone meanwhile is skipped. The claimed items."""
    from .spool import Lost

    taken = []
    for path in hints_beside(inbox, input_name):
        try:
            taken.append(spool.claim(path, work=work))
        except Lost:
            continue
    return taken


def merged_hints(paths: list[Path]) -> Hints | None:
    """The color points of all the given hints files together: a json's points and a png's strokes in
    one Hints (HintError, with its reason, from the first file that cannot be read); None for no files."""
    if not paths:
        return None
    read = [load_hints(path) for path in paths]
    strokes = next((h.strokes for h in read if h.strokes is not None), None)
    return Hints(xs=np.concatenate([h.xs for h in read]), ys=np.concatenate([h.ys for h in read]),
                 colors=np.concatenate([h.colors for h in read]).astype(np.uint8), strokes=strokes)
