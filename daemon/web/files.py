"""The files the web server knows, by id: uploads, results and failed inputs; never a path from a request.

    upload --> inbox/<q>/.reverser-web-HEX.tmp --link--> inbox/<q>/NAME_before.EXT   (record: waiting)
    the service claims it, converts it ... feed.on_placed(queue, name, result, input, reason) --> placed()
        --> record: done, the result's name in the outbox (numbered on a collision), the input's in done/
        --> record: failed, the input's name in failed/ and the reason
    a restart: recovery tells placed() of each input it finds converted in work/, then settle() of those
        it sent through again; a record still waiting for a file in neither place nor the inbox is settled
        from the folders (unreported.py): done, failed, or unknown with what was found

Every input the service finishes while [web] is on gets a record (an upload
gets its record before it enters the inbox, so its id is known at once; a
file dropped into the folder gets one when it is finished; a failed input
found in failed/ gets one when the Failed page lists it). A record holds
only names the service itself wrote; a route gives an id, and the file is
opened by the record's name in the folder the service wrote it to, with
O_NOFOLLOW, and only when it is a regular file. Records are JSON lines in
<state>/web/files.jsonl, a line per change (the last wins); the newest
KEEP records are kept, and the file is rewritten whole (temp name, rename)
when it has grown to twice that; the pictures made for a record forgotten
go with it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import BinaryIO

from loguru import logger

from ..core.config import Config
from ..core.fs import copy_entry, read_jsonl, sweep_temp, temp_name, write_atomic
from ..core.names import is_input, reason_name
from .ondisk import Opened, Refused, inbox_names, open_written, read_reason, upload_name
from .unreported import Folders, identity

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
        self._lines = 0
        self._load()
        for q in cfg.queues:   # an upload cut short by a kill leaves its temporary file in the inbox
            sweep_temp(cfg.inbox(q))

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._lines >= 2 * self.keep:
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

    def _new(self, queue: str, name: str, state: str, **more) -> dict:
        rec = {"id": secrets.token_urlsafe(12), "queue": queue, "name": name, "state": state, "at": time.time(),
               **more}
        self._remember(rec["id"], rec)
        return rec

    # -- the service's hook: where each finished input went --

    def placed(self, queue: str, name: str, result: Path | None, went: Path | None, reason: str) -> None:
        """conversion.feed's on_placed: record a finished input (done with its result, or failed). Heard again
        for the same file (a restart's recovery finishing a move the last run began), it updates its record."""
        with self._lock:
            rid = self._pending.pop((queue, name), None)
            if rid is None:
                again = self._results.get((queue, result.name)) if result is not None else \
                    self._failed.get((queue, went.name)) if went is not None else None
                rid = again if again in self.records and self.records[again]["name"] == name else None
            rec = dict(self.records[rid]) if rid in self.records else self._new(queue, name, "waiting")
            self._forget(rec["id"], rec)
            if result is not None:
                rec.update(state="done", result=result.name, kept=went.name if went else None, reason="")
            else:
                rec.update(state="failed", result=None, kept=went.name if went else None, reason=reason)
            rec["at"] = time.time()
            self._remember(rec["id"], rec)
            self._save(rec)

    def settle(self, in_flight: set[tuple[str, str]]) -> None:
        """conversion.feed's on_recovered: every record still waiting for a file that is not in its inbox nor
        among in_flight (sent through again by the recovery) was finished by a run that stopped before it
        said so: settle it from the folders (done, failed or unknown; unreported.py)."""
        with self._lock:
            open_ = [r for r in self.records.values() if r["state"] in ("waiting", "unknown")
                     and r["queue"] in self.cfg.queues and (r["queue"], r["name"]) not in in_flight
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
                self._forget(rec["id"], rec)
                self._remember(rec["id"], new)
                self._save(new)
                if new["result"]:
                    taken[rec["queue"]].add(new["result"])
                logger.info("web: {} ({}) was finished by the last run, which stopped before recording it; the "
                            "folders say: {}, {}", rec["name"], rec["queue"], new["state"],
                            new["result"] or new["reason"])

    # -- uploads, retry, delete --

    def upload(self, queue: str, filename: str, source: BinaryIO) -> dict:
        """Write source into the queue's inbox under a temporary name, then link it to a free input name; the
        watcher takes it from there as any dropped file. Refused: 404 unknown queue, 413 over max_file_mb,
        415 not an image name."""
        if queue not in self.cfg.queues:
            raise Refused(404, f"no queue {queue!r}; queues: {', '.join(self.cfg.queues)}")
        name = upload_name(filename)
        inbox = self.cfg.inbox(queue)
        inbox.mkdir(parents=True, exist_ok=True)
        limit = int(self.cfg.limits.max_file_mb * 1e6)
        tmp = inbox / temp_name("web")
        try:
            with open(tmp, "xb") as out:
                copied = 0
                while chunk := source.read(1 << 20):
                    copied += len(chunk)
                    if copied > limit:
                        raise Refused(413, f"larger than [limits] max_file_mb = {self.cfg.limits.max_file_mb:g} "
                                           "MB; the inbox would refuse it too")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._enter(queue, name, tmp, None)
        finally:
            tmp.unlink(missing_ok=True)

    def _enter(self, queue: str, name: str, staged: Path, rec: dict | None) -> dict:
        """Link staged into the inbox under the first free input name (also free of uploads not yet placed);
        the record is written first, so the service cannot finish the file before its id is known."""
        inbox = self.cfg.inbox(queue)
        with self._lock:
            for candidate in inbox_names(name):
                if (queue, candidate) in self._pending or os.path.lexists(inbox / candidate):
                    continue
                if rec is None:
                    new = self._new(queue, candidate, "waiting", upload=True)
                else:
                    self._forget(rec["id"], rec)
                    new = {**rec, "name": candidate, "state": "waiting", "result": None, "kept": None,
                           "reason": "", "at": time.time()}
                    self._remember(new["id"], new)
                try:
                    os.link(staged, inbox / candidate)
                except FileExistsError:
                    self._forget(new["id"], new)
                    continue
                new.update(identity(staged))   # to know it again in failed/ or done/ (settle)
                self._save(new, sync=True)
                return new
        raise Refused(409, f"no free name for {name} in the inbox")

    def retry(self, rid: str) -> dict:
        """Put a failed input back into its inbox (the normal claim path takes it), its reason note removed."""
        rec = self._failed_record(rid)
        failed = self.cfg.failed(rec["queue"])
        src = failed / rec["kept"]
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(409, f"{rec['kept']} is not a regular file (a link, say): it would fail again; "
                               "copy the file itself into the inbox")
        staged, inbox = src, self.cfg.inbox(rec["queue"])
        if st.st_dev != os.stat(inbox).st_dev:   # inbox on another filesystem: copy beside it first
            staged = inbox / temp_name("web")
            copy_entry(src, staged, st)
        try:
            name = rec["name"] if is_input(rec["name"]) else upload_name(rec["kept"])
            new = self._enter(rec["queue"], name, staged, rec)
        finally:
            if staged != src:
                staged.unlink(missing_ok=True)
        src.unlink(missing_ok=True)
        (failed / reason_name(rec["kept"])).unlink(missing_ok=True)
        logger.info("{}: {} put back into the inbox as {} (retry from the web)", rec["queue"], rec["kept"],
                    new["name"])
        return new

    def delete(self, rid: str) -> None:
        """Remove a failed input and its reason note, and its record."""
        rec = self._failed_record(rid)
        failed = self.cfg.failed(rec["queue"])
        (failed / rec["kept"]).unlink(missing_ok=True)   # a link is removed, never followed
        (failed / reason_name(rec["kept"])).unlink(missing_ok=True)
        with self._lock:
            self._forget(rid, rec)
            self._save({"id": rid, "deleted": True})
        self._drop_pictures(rid)
        logger.info("{}: {} deleted from the failed folder (from the web)", rec["queue"], rec["kept"])

    def _failed_record(self, rid: str) -> dict:
        rec = self.records.get(rid)
        if rec is None or rec["queue"] not in self.cfg.queues:
            raise Refused(404, "no such file")
        if rec["state"] != "failed" or not rec.get("kept") or \
                not os.path.lexists(self.cfg.failed(rec["queue"]) / rec["kept"]):
            raise Refused(409, f"{rec['name']} is {self.state(rid)['state']}, not waiting in the failed folder")
        return rec

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
        rec = self.records.get(rid)
        if rec is None or rec["state"] != "done" or rec["queue"] not in self.cfg.queues:
            return None
        return open_written(self.cfg.outbox(rec["queue"]), rec.get("result"))

    def before(self, rid: str) -> Opened | None:
        """The input of a done file, kept in done/ ([output] keep_inputs), or None."""
        rec = self.records.get(rid)
        if rec is None or rec["state"] != "done" or rec["queue"] not in self.cfg.queues:
            return None
        return open_written(self.cfg.state_dir("done", rec["queue"]), rec.get("kept"))

    def done(self, page: int = 0, per_page: int = 24) -> tuple[list[dict], int]:
        """(the done records of one page, newest first; how many there are)."""
        with self._lock:
            done = [r for r in reversed(self.records.values()) if r["state"] == "done"]
        return done[page * per_page:(page + 1) * per_page], len(done)

    def failed(self) -> list[dict]:
        """Every input now in a queue's failed folder, newest first, each with a record (made for those
        quarantined while [web] was off, or before) and its reason."""
        found = []
        for q in self.cfg.queues:
            folder = self.cfg.failed(q)
            try:
                entries = [e for e in os.scandir(folder) if not e.name.startswith(".")
                           and not e.name.endswith(".reason.txt") and not e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for e in entries:
                with self._lock:
                    rid = self._failed.get((q, e.name))
                    if rid is None:
                        rec = self._new(q, e.name, "failed", kept=e.name, result=None,
                                        reason=read_reason(folder / reason_name(e.name)))
                        self._save(rec)
                        rid = rec["id"]
                rec = self.records[rid]
                try:
                    when = os.lstat(folder / reason_name(e.name)).st_mtime
                except OSError:
                    when = rec["at"]
                found.append({**rec, "at": when})
        return sorted(found, key=lambda r: r["at"], reverse=True)

