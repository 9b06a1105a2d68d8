"""The files the web server knows, by id: uploads, results and failed inputs; never a path from a request.

    upload --> inbox/<q>/.reverser-web-HEX.tmp --link--> inbox/<q>/NAME_before.EXT   (record: waiting)
    the service claims it, converts it ... feed.on_placed(queue, name, result, input, reason, claimed)
        --> placed(): the record of that file (its inode: a same-named drop is another file)
        --> record: done, the result's name in the outbox (numbered on a collision), the input's in done/
        --> record: failed, the input's name in failed/ and the reason
    a restart: recovery tells placed() of each input it finds converted in work/, then settle() of those
        it sent through again; a record still waiting for a file in neither place nor the inbox is settled
        from the folders (unreported.py): done, failed, or unknown with what was found; then the results
        and failed inputs no record holds are indexed (listing.py), so the pages show what was done before

Every input the service finishes while [web] is on gets a record (an upload
gets its record before it enters the inbox, so its id is known at once; a
file dropped into the folder gets one when it is finished; a failed input
found in failed/ gets one when the Failed page lists it). A record holds
the names the service itself wrote and each file's identity (device, inode,
size): a route gives an id, and the file is opened by the record's name in
the folder the service wrote it to, with O_NOFOLLOW, only when it is a
regular file and still the same file (a result moved away and a new one of
its name written, an input swept from done/ and another kept under its
name, answer 404; a failed input is known by its reason note, which each
failure writes anew, so a person may mend the file in failed/ and retry). Records are JSON lines in <state>/web/files.jsonl, a
line per change (the last wins); the newest KEEP records are kept, and the
file is rewritten whole (temp name, rename) when it has grown to twice
that; the pictures made for a record forgotten go with it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import BinaryIO

from loguru import logger

from ..core.config import Config
from ..core.fs import read_jsonl, sweep_temp, write_atomic
from ..core.names import reason_name
from . import listing, moves
from .ondisk import Opened, ident, open_written, read_reason
from .unreported import Folders

INDEX = "files.jsonl"
KEEP = 10_000                                    # records kept; an older id answers 404
ID = re.compile(r"^[A-Za-z0-9_-]{16}$")


class FileIndex:
    """The records of the files the web server shows, and the moves it makes (upload, retry, delete)."""

    def __init__(self, cfg: Config, keep: int = KEEP):
        self.cfg, self.keep = cfg, keep
        self.path = cfg.paths.state / "web" / INDEX
        self._lock = threading.Lock()
        self.records: dict[str, dict] = {}
        self._pending: dict[tuple[str, str], str] = {}      # (queue, inbox name) -> id, until placed
        self._failed: dict[tuple[str, str], str] = {}       # (queue, name in failed/) -> id
        self._results: dict[tuple[str, str], str] = {}      # (queue, result name) -> id: a report heard twice
        self._busy: set[str] = set()                        # ids a retry or delete is moving now
        self._lines = 0
        self._indexed = False                               # the folders' earlier files indexed (listing.py)
        self._load()
        for q in cfg.queues:   # an upload cut short by a kill leaves its temporary file in the inbox
            sweep_temp(cfg.inbox(q))
            moves.restore(self, q)

    # -- the record file --

    def _load(self) -> None:
        lines = read_jsonl(self.path)
        for rec in lines:
            if not isinstance(rec, dict) or not ID.match(str(rec.get("id", ""))):
                continue
            if rec.get("deleted"):
                self.records.pop(rec["id"], None)
            else:
                self.records.pop(rec["id"], None)   # re-inserted: the order is the order of the last change
                self.records[rec["id"]] = rec
        self._lines = len(lines)
        self._trim()
        for rid, rec in self.records.items():
            self._remember(rid, rec)

    def _remember(self, rid: str, rec: dict) -> None:
        if rec.get("gone"):
            return   # its file left failed/ and another took its name (listing.py): nothing settles it again
        if rec["state"] in ("waiting", "unknown"):   # unknown: a late report still settles it
            self._pending[(rec["queue"], rec["name"])] = rid
        elif rec["state"] == "failed" and rec.get("kept"):
            self._failed[(rec["queue"], rec["kept"])] = rid
        elif rec["state"] == "done" and rec.get("result"):
            self._results[(rec["queue"], rec["result"])] = rid

    def _forget(self, rid: str, rec: dict) -> None:
        """Drop what _remember noted of rid (only what points to it: a done record's kept names a file in
        done/, which another record's failed/ file may share)."""
        q = rec["queue"]
        for table, key in ((self._pending, (q, rec["name"])), (self._failed, (q, rec.get("kept"))),
                           (self._results, (q, rec.get("result")))):
            if table.get(key) == rid:
                del table[key]

    def _trim(self) -> None:
        while len(self.records) > self.keep:
            rid = next(iter(self.records))
            self._forget(rid, self.records.pop(rid))
            self._drop_pictures(rid)

    def _drop_pictures(self, rid: str) -> None:
        """The thumbnails and browser copies made for a record that is forgotten (thumbs.py)."""
        for folder in ("thumbs", "full"):
            for which in ("before", "after"):
                for ext in (".jpg", ".png"):
                    (self.path.parent / folder / f"{rid}-{which}{ext}").unlink(missing_ok=True)

    def _save(self, rec: dict, sync: bool = False) -> None:
        """One line per change (called with the lock held); no fsync for a result's record, as an index
        line lost in a power cut costs only its page entry, and conversion should not wait for a disk flush."""
        self.records.pop(rec["id"], None)
        if not rec.get("deleted"):
            self.records[rec["id"]] = rec
        self._trim()
        self._write(rec, sync, whole=self._lines >= 2 * self.keep)

    def _write(self, rec: dict | None, sync: bool = False, whole: bool = False) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if whole:
                data = "".join(json.dumps(r) + "\n" for r in self.records.values()).encode()
                write_atomic(self.path.parent, self.path.name, data, on_exists="replace")
                self._lines = len(self.records)
                return
            with open(self.path, "ab") as f:
                f.write((json.dumps(rec) + "\n").encode())
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            self._lines += 1
        except OSError as e:
            logger.warning("web: cannot write {}: {}; after a restart the dashboard knows this file only as far "
                           "as the folders tell", self.path, e)

    def _new(self, queue: str, name: str, state: str, remember: bool = True, **more) -> dict:
        rec = {"id": secrets.token_urlsafe(12), "queue": queue, "name": name, "state": state, "at": time.time(),
               **more}
        if remember:
            self._remember(rec["id"], rec)
        return rec

    # -- the service's hook: where each finished input went --

    def placed(self, queue: str, name: str, result: Path | None, went: Path | None, reason: str,
               claimed: tuple[int, int] | None = None) -> None:
        """conversion.feed's on_placed: record a finished input (done with its result, or failed); claimed is
        the (device, inode) it had in work/, so that a same-named file's report never settles an upload's
        record. Heard again for the same file (a restart's recovery finishing a move the last run began),
        it updates its record."""
        kept_id, result_id = ident(went), ident(result)
        note_id = ident(went.with_name(reason_name(went.name))) if went is not None and result is None else None
        with self._lock:
            rid = self._pending.get((queue, name))
            if rid is not None and not self._same_file(self.records[rid], claimed, went, kept_id):
                rid = None   # another file of that name (dropped by hand while the upload was in work/)
            if rid is None:
                again = self._results.get((queue, result.name)) if result is not None else \
                    self._failed.get((queue, went.name)) if went is not None else None
                rid = again if again in self.records and self.records[again]["name"] == name else None
            rec = dict(self.records[rid]) if rid in self.records else self._new(queue, name, "waiting", False)
            self._forget(rec["id"], rec)
            if result is not None:
                rec.update(state="done", result=result.name, kept=went.name if went else None, reason="",
                           result_id=result_id, kept_id=kept_id, note_id=None)
            else:
                rec.update(state="failed", result=None, kept=went.name if went else None, reason=reason,
                           result_id=None, kept_id=None, note_id=note_id)
            rec["at"] = time.time()
            self._claim_names(rec)
            self._remember(rec["id"], rec)
            self._save(rec)

    @staticmethod
    def _same_file(rec: dict, claimed: tuple[int, int] | None, went: Path | None, kept_id: list | None) -> bool:
        """Whether a report (its claimed identity, or where its input went) is of the file rec entered."""
        if rec.get("ino") is None:
            return True   # a record older than identities: by name, as it was made
        if claimed is not None:
            return tuple(claimed) == (rec["dev"], rec["ino"])
        if kept_id is not None:   # the recovery's report: the input moved on, keeping its inode on one disk
            return kept_id[:2] == [rec["dev"], rec["ino"]] if kept_id[0] == rec["dev"] else \
                kept_id[2] == rec.get("size")
        return True

    def _claim_names(self, rec: dict) -> None:
        """rec now holds its result and kept names: an older record holding the same name (its file moved
        away, this one written under the name since) lets go of it, so the tables point to one file."""
        q = rec["queue"]
        for table, key in ((self._results, (q, rec.get("result"))), (self._failed, (q, rec.get("kept")))):
            other = table.get(key)
            if other is not None and other != rec["id"] and key[1] is not None:
                del table[key]

    def settle(self, in_flight: set[tuple[str, str]]) -> None:
        """conversion.feed's on_recovered: every record still waiting for a file that is not in its inbox nor
        among in_flight (sent through again by the recovery) was finished by a run that stopped before it
        said so: settle it from the folders (done, failed or unknown; unreported.py). Then, once, the
        results and failed inputs the folders hold that no record names get records (listing.py)."""
        with self._lock:
            open_ = [r for r in self.records.values() if r["state"] in ("waiting", "unknown")
                     and not r.get("gone") and r["queue"] in self.cfg.queues and (r["queue"], r["name"]) not in in_flight
                     and not os.path.lexists(self.cfg.inbox(r["queue"]) / r["name"])]
            folders, taken = Folders(self.cfg), {q: set() for q in self.cfg.queues}
            for q, result in (self._results if open_ else ()):
                taken.setdefault(q, set()).add(result)
            for rec in open_:
                new = {**rec, **folders.where_it_went(rec, taken[rec["queue"]], read_reason)}
                if new["state"] == "unknown":
                    if new["reason"] == rec.get("reason"):
                        continue   # as the last start left it
                else:
                    new["at"] = time.time()   # an unknown one keeps its time: results are looked for since then
                    q = rec["queue"]
                    new["result_id"] = ident(self.cfg.outbox(q) / new["result"]) if new["result"] else None
                    done, failed = new["state"] == "done" and new["kept"], new["state"] == "failed"
                    new["kept_id"] = ident(self.cfg.state_dir("done", q) / new["kept"]) if done else None
                    new["note_id"] = ident(self.cfg.failed(q) / reason_name(new["kept"])) if failed else None
                self._forget(rec["id"], rec)
                self._remember(rec["id"], new)
                self._save(new)
                if new["result"]:
                    taken[rec["queue"]].add(new["result"])
                logger.info("web: {} ({}) was finished by the last run, which stopped before recording it; the "
                            "folders say: {}, {}", rec["name"], rec["queue"], new["state"],
                            new["result"] or new["reason"])
            if not self._indexed:
                self._indexed = True
                listing.index_found(self)

    # -- uploads, retry, delete (moves.py) --

    def upload(self, queue: str, filename: str, source: BinaryIO, hints: bytes | None = None) -> dict:
        """Write source into the queue's inbox under a free input name (hints: its color points, placed
        beside it first); the watcher takes it from there."""
        return moves.upload(self, queue, filename, source, hints)

    def recolor(self, rid: str, hints: bytes) -> dict:
        """Color a done file again with hints, as a new file with its own id (moves.recolor)."""
        return moves.recolor(self, rid, hints)

    def retry(self, rid: str) -> dict:
        """Put a failed input back into its inbox; one at a time per id (409 for the others)."""
        return moves.retry(self, rid)

    def delete(self, rid: str) -> None:
        """Remove a failed input and its reason note, and its record."""
        moves.delete(self, rid)

    # -- reading --

    def state(self, rid: str) -> dict | None:
        """The API's view of one file: its state, and the result's URL or the reason."""
        rec = self.records.get(rid)
        if rec is None:
            return None
        state = rec["state"]
        if state == "waiting" and not os.path.lexists(self.cfg.inbox(rec["queue"]) / rec["name"]):
            state = "working"   # claimed: in work/, in the pipeline
        out = {"id": rid, "queue": rec["queue"], "name": rec["name"], "state": state}
        if state == "done":
            out.update(result=f"/api/files/{rid}/result", result_name=rec["result"])
        elif state in ("failed", "unknown"):
            out["reason"] = rec["reason"]
        return out

    def result(self, rid: str) -> Opened | None:
        """The result of a done file, when it is still the file written for it, or None."""
        rec = self.records.get(rid)
        if rec is None or rec["state"] != "done" or rec["queue"] not in self.cfg.queues:
            return None
        return open_written(self.cfg.outbox(rec["queue"]), rec.get("result"), rec.get("result_id"))

    def before(self, rid: str) -> Opened | None:
        """The input of a done file, kept in done/ ([output] keep_inputs), when it is still that file, or None."""
        rec = self.records.get(rid)
        if rec is None or rec["state"] != "done" or rec["queue"] not in self.cfg.queues:
            return None
        return open_written(self.cfg.state_dir("done", rec["queue"]), rec.get("kept"), rec.get("kept_id"))

    def done(self, page: int = 0, per_page: int = 24) -> tuple[list[dict], int]:
        """(the done records of one page, newest first; how many there are)."""
        with self._lock:
            done = [r for r in reversed(self.records.values()) if r["state"] == "done"]
        return done[page * per_page:(page + 1) * per_page], len(done)

    def failed(self, offset: int = 0, limit: int = listing.PAGE) -> tuple[list[dict], int]:
        """(one page of the inputs now in the failed folders, newest first, each with a record; how many)."""
        return listing.failed_page(self, offset, limit)

