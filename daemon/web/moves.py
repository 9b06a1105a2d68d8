"""The moves the web makes for a person: an upload into the inbox, a failed input retried or deleted.

    upload  inbox/<q>/.reverser-web-HEX.tmp --link--> inbox/<q>/NAME_before.EXT, the first name free in the
            inbox, among uploads not yet placed and among the files in work/ (a same-named file there is
            another file, whose report must not settle this one's record)
    retry   failed/<q>/NAME --rename--> failed/<q>/.reverser-retry-<id> --link--> inbox/<q>/NAME_before.EXT,
            then the staged name and the reason note removed
    delete  failed/<q>/NAME and its reason note removed, then the record
    recolor done/<q>/NAME --copy--> inbox/<q>/.reverser-web-HEX.tmp, then entered as an upload with hints

An upload with color points places NAME_hints.json (hints.place_sidecar) under
the name it chose before it links the picture, so the claim that takes the
picture finds its hints beside it; a name whose hints file is taken (a
person's own, waiting) is not chosen.

A retry or delete holds its id while it moves the file (FileIndex._busy, with
the index's lock), so of eight sent at once one does it and the others are
answered 409; the rename out of failed/ comes first, so a file quarantined
again under its name while the retry runs is never the one removed. A kill
between the rename and the link leaves the staged name, put back under its
failed/ name at the next start (restore()).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

from loguru import logger

from ..conversion.claims.spool import FALLBACK_WORK
from ..core.fs import TEMP_PREFIX, copy_entry, temp_name
from ..core.names import hints_names, is_input, reason_name
from .hints import place_sidecar
from .ondisk import Refused, ident, inbox_names, upload_name
from .unreported import identity

RETRY_PREFIX = TEMP_PREFIX + "retry-"     # + the id: a failed input a retry is moving (failed/ stays its home)


def upload(index: "FileIndex", queue: str, filename: str, source: BinaryIO, hints: bytes | None = None,
           **more) -> dict:
    """Write source into the queue's inbox under a temporary name, then link it to a free input name; the
    watcher takes it from there as any dropped file. hints: its color points (hints.checked JSON), placed
    first. Refused: 404 unknown queue, 413 over max_file_mb, 415 not an image name, 400 points for a queue
    that does not colorize."""
    cfg = index.cfg
    if queue not in cfg.queues:
        raise Refused(404, f"no queue {queue!r}; queues: {', '.join(cfg.queues)}")
    if hints is not None and cfg.queues[queue].task != "colorize":
        raise Refused(400, f"bad hints: queue {queue!r} does not colorize; color points are for colorize queues")
    name = upload_name(filename)
    inbox = cfg.inbox(queue)
    inbox.mkdir(parents=True, exist_ok=True)
    limit = int(cfg.limits.max_file_mb * 1e6)
    tmp = inbox / temp_name("web")
    try:
        with open(tmp, "xb") as out:
            copied = 0
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise Refused(413, f"larger than [limits] max_file_mb = {cfg.limits.max_file_mb:g} "
                                       "MB; the inbox would refuse it too")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return _enter(index, queue, name, tmp, None, hints, **more)
    finally:
        tmp.unlink(missing_ok=True)


def recolor(index: "FileIndex", rid: str, hints: bytes) -> dict:
    """A done file colored again with hints: a copy of its kept input entered as a new upload (its own id;
    the earlier file and result stay). Refused: 404 unknown, 409 not done or its input not kept."""
    rec = index.records.get(rid)
    if rec is None or rec["queue"] not in index.cfg.queues:
        raise Refused(404, "no such file")
    opened = index.before(rid)
    if opened is None:
        why = "is not done" if rec["state"] != "done" else \
            "has no input kept in done/ ([output] keep_inputs, done_keep_days) to color again"
        raise Refused(409, f"{rec['name']} {why}")
    with os.fdopen(opened.fd, "rb") as source:
        new = upload(index, rec["queue"], rec["name"], source, hints, recolor_of=rid)
    logger.info("{}: {} entered as {} to be colored again with color points (from the web)", rec["queue"],
                rec["name"], new["name"])
    return new


def in_work(index: "FileIndex", queue: str) -> set[str]:
    """The names of the files the service has claimed from queue's inbox (work/<q>/<ticket>@NAME, or
    <ticket>@/NAME for a long name; in the inbox's own work folder when it is on another filesystem)."""
    names = set()
    for folder in (index.cfg.state_dir("work", queue), index.cfg.inbox(queue) / FALLBACK_WORK):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            _, sep, name = e.name.partition("@")
            if sep and name:
                names.add(name)
            elif sep and e.is_dir(follow_symlinks=False):
                try:
                    names.update(os.listdir(e.path))
                except OSError:
                    pass
    return names


def _enter(index: "FileIndex", queue: str, name: str, staged: Path, rec: dict | None, hints: bytes | None = None,
           **more) -> dict:
    """Link staged into the inbox under the first free input name (free of uploads not yet placed and of the
    files in work/; with hints, of hints files too), its hints placed first; the record is written first, so
    the service cannot finish the file before its id is known."""
    inbox = index.cfg.inbox(queue)
    with index._lock:
        claimed = in_work(index, queue)
        for candidate in inbox_names(name):
            if (queue, candidate) in index._pending or candidate in claimed or os.path.lexists(inbox / candidate):
                continue
            if hints is not None and any(os.path.lexists(inbox / h) for h in hints_names(candidate)):
                continue
            if rec is None:
                new = index._new(queue, candidate, "waiting", upload=True, **more)
            else:
                index._forget(rec["id"], rec)
                new = {**rec, "name": candidate, "state": "waiting", "result": None, "kept": None,
                       "reason": "", "at": time.time(), "result_id": None, "kept_id": None, "note_id": None}
                index._remember(new["id"], new)
            try:
                sidecar = place_sidecar(inbox, candidate, hints) if hints is not None else None
            except FileExistsError:   # a person's hints file dropped under that name just now
                index._forget(new["id"], new)
                continue
            try:
                os.link(staged, inbox / candidate)
            except FileExistsError:
                index._forget(new["id"], new)
                if sidecar is not None:
                    sidecar.unlink(missing_ok=True)
                continue
            new.update(identity(staged))   # to know it again in failed/ or done/ (settle), and its report
            index._save(new, sync=True)
            return new
    raise Refused(409, f"no free name for {name} in the inbox")


def _take(index: "FileIndex", rid: str) -> dict:
    """The failed record rid, held for one move (retry, delete) until _release; 404 unknown, 409 when it is
    not in the failed folder (anymore), or another move of it is under way."""
    with index._lock:
        rec = index.records.get(rid)
        if rec is None or rec["queue"] not in index.cfg.queues:
            raise Refused(404, "no such file")
        if rid in index._busy:
            raise Refused(409, f"{rec['name']} is being retried or deleted by another request")
        if rec["state"] != "failed" or not rec.get("kept"):
            raise Refused(409, f"{rec['name']} is {index.state(rid)['state']}, not waiting in the failed folder")
        failed = index.cfg.failed(rec["queue"])
        if not os.path.lexists(failed / rec["kept"]):
            raise Refused(409, f"{rec['kept']} is no longer in the failed folder")
        note = ident(failed / reason_name(rec["kept"]))   # each failure writes its note anew
        if rec.get("note_id") and note is not None and note != list(rec["note_id"]):
            raise Refused(409, f"{rec['kept']} in the failed folder is another file now (this one was moved "
                               "or deleted by hand); reload the Failed page")
        index._busy.add(rid)
        return dict(rec)


def _release(index: "FileIndex", rid: str) -> None:
    with index._lock:
        index._busy.discard(rid)


def retry(index: "FileIndex", rid: str) -> dict:
    """Put a failed input back into its inbox (the normal claim path takes it), its reason note removed."""
    rec = _take(index, rid)
    try:
        return _retry(index, rec)
    finally:
        _release(index, rid)


def _retry(index: "FileIndex", rec: dict) -> dict:
    cfg, q = index.cfg, rec["queue"]
    failed = cfg.failed(q)
    src, held = failed / rec["kept"], failed / f"{RETRY_PREFIX}{rec['id']}"
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(409, f"{rec['kept']} is not a regular file (a link, say): it would fail again; "
                           "copy the file itself into the inbox")
    try:
        os.rename(src, held)   # out of failed/ first: one move has it, and a new failure may take its name
    except FileNotFoundError:
        raise Refused(409, f"{rec['kept']} is no longer in the failed folder") from None
    staged, inbox = held, cfg.inbox(q)
    try:
        if st.st_dev != os.stat(inbox).st_dev:   # inbox on another filesystem: copy beside it first
            staged = inbox / temp_name("web")
            copy_entry(held, staged, st)
        name = rec["name"] if is_input(rec["name"]) else upload_name(rec["kept"])
        new = _enter(index, q, name, staged, rec)
    except BaseException:
        _put_back(held, src)
        raise
    finally:
        if staged != held:
            staged.unlink(missing_ok=True)
    held.unlink(missing_ok=True)
    (failed / reason_name(rec["kept"])).unlink(missing_ok=True)
    logger.info("{}: {} put back into the inbox as {} (retry from the web)", q, rec["kept"], new["name"])
    return new


def _put_back(held: Path, home: Path) -> None:
    """A retry that could not enter the inbox: the input goes back under its failed/ name (numbered when a
    new failure took that name meanwhile)."""
    for n in range(100):
        target = home if n == 0 else home.with_name(f"{home.stem}-{n}{home.suffix}")
        try:
            os.link(held, target)
        except FileExistsError:
            continue
        except OSError:
            return   # held stays; restore() puts it back at the next start
        held.unlink(missing_ok=True)
        return


def delete(index: "FileIndex", rid: str) -> None:
    """Remove a failed input and its reason note, and its record."""
    rec = _take(index, rid)
    try:
        failed = index.cfg.failed(rec["queue"])
        (failed / rec["kept"]).unlink(missing_ok=True)   # a link is removed, never followed
        (failed / reason_name(rec["kept"])).unlink(missing_ok=True)
        with index._lock:
            index._forget(rid, rec)
            index._save({"id": rid, "deleted": True})
    finally:
        _release(index, rid)
    index._drop_pictures(rid)
    logger.info("{}: {} deleted from the failed folder (from the web)", rec["queue"], rec["kept"])


def restore(index: "FileIndex", queue: str) -> None:
    """At start-up: a retry a kill cut short left its input under a staged name in failed/; it goes back."""
    failed = index.cfg.failed(queue)
    try:
        held = [e.name for e in os.scandir(failed) if e.name.startswith(RETRY_PREFIX)]
    except OSError:
        return
    for name in held:
        path = failed / name
        try:
            linked = os.lstat(path).st_nlink > 1
        except OSError:
            continue
        if linked:   # it had entered the inbox (or gone on from there) before the kill
            path.unlink(missing_ok=True)
            continue
        rec = index.records.get(name[len(RETRY_PREFIX):])
        if rec is None or not rec.get("kept"):
            logger.warning("{}: {} is a retry's input that the last run left, with no record of its name; "
                           "rename it to NAME_before.EXT in the inbox to convert it", queue, path)
            continue
        _put_back(path, failed / rec["kept"])
        logger.info("{}: {} was being retried when the last run stopped; it is back in {}", queue, rec["kept"],
                    failed)
