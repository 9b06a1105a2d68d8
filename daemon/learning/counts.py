"""A pairs folder's counts.json: pairs filed, new since the last training, when that was.

The intake counts each filed pair in (intake.py); a completed training run,
nightly or `reverser train`, marks the new pairs it used as trained; the
status, the web's Training page and the retrain schedule read them. Both
writers may run at once (the service and a foreground `reverser train`), so
each update holds the folder's lock.
"""

from __future__ import annotations

import json
from pathlib import Path

from unet.data import find_pairs

from ..core.fs import file_lock, now_iso, write_json

COUNTS, LOCK = "counts.json", ".lock"


def read_counts(pairs_dir: Path) -> dict:
    """{"pairs": N, "new": M, "last_training": time or None}: what `reverser status` shows."""
    try:
        counts = json.loads((Path(pairs_dir) / COUNTS).read_text())
    except (OSError, ValueError):
        counts = {}
    return {"pairs": counts.get("pairs", 0), "new": counts.get("new", 0),
            "last_training": counts.get("last_training"), "updated": counts.get("updated")}


def update_counts(pairs_dir: Path, lone_color: bool, added: int = 0, trained: int | None = None,
                  recount: bool = True) -> dict:
    """Count added pairs in; recount: count the pairs in the folder (a listing) instead of adding."""
    # The service's intake and a foreground `reverser train` may both update counts.json.
    with file_lock(pairs_dir / LOCK):
        counts = read_counts(pairs_dir)
        counts["new"] += added
        if trained is not None:
            # Pairs that arrived while the run trained are still new for the next one.
            counts["new"] = max(0, counts["new"] - trained)
            counts["last_training"] = now_iso()
        if recount:
            counts["pairs"] = len(find_pairs([pairs_dir], allow_lone_color=lone_color)) if pairs_dir.is_dir() else 0
        else:
            counts["pairs"] += added
        counts["updated"] = now_iso()
        write_json(pairs_dir / COUNTS, counts)
        return counts


def mark_trained(pairs_dir: Path, lone_color: bool, used_new: int) -> dict:
    """After a completed training run: the used_new pairs that were new are new no more."""
    return update_counts(Path(pairs_dir), lone_color, trained=used_new)
