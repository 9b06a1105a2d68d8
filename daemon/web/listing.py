"""What the folders hold that the web lists: the failed inputs, a page at a time, and at start the results
and kept inputs the service wrote before the web knew of them.

    failed_page   every queue's failed/ read (names, and each note's time: cheap), sorted newest first,
                  and records made or checked only for the page asked for (at most PAGE_MAX, and never
                  more than half of what the index keeps, so the ids of one page are never forgotten while
                  it is listed); a file in failed/ under a recorded name but not the recorded failure (its reason
                  note is another: the old one deleted by hand, a new one failed under its name) gets a
                  record of its own, and the old record says so (unknown)
    index_found   once, after the start-up's settling: the newest results in each outbox that no record
                  names (at most FOUND_MAX, and only as many as the index has room for, so no record is
                  forgotten for them), each with its input in done/ when one of its name is there
"""

from __future__ import annotations

import heapq
import os

from ..core.names import REASON_SUFFIX, output_name, reason_name
from .ondisk import ident, read_reason

PAGE = 100          # failed inputs a page lists unless asked for fewer
PAGE_MAX = 500      # the most a page lists
FOUND_MAX = 1000    # results found in the folders at start that get a record, newest first


def page_size(index: "FileIndex", limit: int) -> int:
    """How many failed inputs a page asked for limit lists."""
    return max(1, min(limit, PAGE_MAX, index.keep // 2 or 1))


def failed_page(index: "FileIndex", offset: int = 0, limit: int = PAGE) -> tuple[list[dict], int]:
    """(the failed inputs from offset, newest first, at most limit, each a record with the note's time as
    "at"; how many are in the failed folders now)."""
    cfg = index.cfg
    limit = page_size(index, limit)
    found = []
    for q in cfg.queues:
        folder = cfg.failed(q)
        try:
            entries = [e for e in os.scandir(folder) if not e.name.startswith(".")
                       and not e.name.endswith(REASON_SUFFIX) and not e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for e in entries:
            try:
                when = os.lstat(folder / reason_name(e.name)).st_mtime
            except OSError:
                try:
                    when = e.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue   # gone since the folder was read
            found.append((when, q, e.name))
    found.sort(reverse=True)
    rows = []
    with index._lock:
        for when, q, name in found[max(0, offset):max(0, offset) + limit]:
            rows.append({**_record(index, q, name), "at": when})
    return rows, len(found)


def _record(index: "FileIndex", q: str, name: str) -> dict:
    """The record of failed/<q>/name (made, or taken back from a record of an earlier file of that name);
    called with the index's lock held. A record shown is moved to the newest end, so the records made for
    the rest of the page cannot push it out."""
    folder = index.cfg.failed(q)
    now = ident(folder / reason_name(name))   # each failure writes its note anew; a mended input keeps it
    rid = index._failed.get((q, name))
    rec = index.records.get(rid) if rid is not None else None
    if rec is not None and now is not None:
        if rec.get("note_id") and list(rec["note_id"]) != now:
            gone = {**rec, "state": "unknown", "gone": True,
                    "reason": f"{name} left the failed folder (deleted or moved by hand), and another file of "
                              "its name failed since"}
            index._forget(rid, rec)
            index._save(gone)
            rec = None
        elif not rec.get("note_id"):   # a record made before records kept identities: this file from now on
            rec = {**rec, "note_id": now}
            index._save(rec)
    if rec is None:
        rec = index._new(q, name, "failed", kept=name, result=None, note_id=now,
                         reason=read_reason(folder / reason_name(name)))
        index._save(rec)
        return rec
    index.records[rec["id"]] = index.records.pop(rec["id"])
    return rec


def index_found(index: "FileIndex") -> None:
    """Records for the newest results in the outboxes that no record names (called with the lock held), put
    before every record the index holds (they were written before any of them was heard of)."""
    cfg = index.cfg
    room = min(FOUND_MAX, index.keep - len(index.records))
    if room <= 0:
        return
    found, inputs = [], {}
    for q in cfg.queues:
        done = cfg.state_dir("done", q)
        try:   # the input of each result name, where done/ keeps one of that name (not numbered: a guess)
            inputs[q] = {output_name(e.name, cfg.output.format): e.name for e in os.scandir(done)
                         if not e.name.startswith(".") and e.is_file(follow_symlinks=False)}
        except OSError:
            inputs[q] = {}
        try:
            entries = [e for e in os.scandir(cfg.outbox(q)) if not e.name.startswith(".")
                       and e.is_file(follow_symlinks=False) and (q, e.name) not in index._results]
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append((st.st_mtime, q, e.name, ident(cfg.outbox(q) / e.name)))
    if not found:
        return
    made = {}
    for when, q, result, result_id in sorted(heapq.nlargest(room, found)):
        kept = inputs[q].get(result)
        rec = index._new(q, kept or result, "done", result=result, kept=kept, reason="", result_id=result_id,
                         kept_id=ident(cfg.state_dir("done", q) / kept) if kept else None, found=True, at=when)
        made[rec["id"]] = rec
    index.records = {**made, **index.records}
    index._write(None, whole=True)
