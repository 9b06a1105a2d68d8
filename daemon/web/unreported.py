"""Where an input went that the service never reported to the web's file index: found in the folders after a restart.

The service tells the index where each input went (feed.on_placed), and its
start-up recovery tells it of those it finds converted in work/. What neither
can tell is an input that left work/ just before a kill -9 (between its move
and the index's line), or whose line a power cut took (the index does not
flush a result's line): its record says waiting while its file is in no
inbox and in no work/. Such a record is settled here, from what the service
left, most certain first:

    failed/  the input itself, by its identity (device and inode, taken when it entered the inbox;
             by name and size where failed/ is on another filesystem)     -> failed, with its note's reason
    outbox/  exactly one result of its name (NAME_after.EXT, numbered) written after the record was made
             and no other record's                                       -> done (its input found in done/
                                                                            the same way as failed/'s)
    else                                                                 -> unknown, saying what was found

A result is matched by name and time only where nothing better is left (an
input's result carries no mark of its input once the receipt is gone), so
two candidates leave the record unknown rather than guessed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..core.config import Config
from ..core.fs import TEMP_PREFIX, numbered
from ..core.names import output_name, reason_name

SLACK_S = 1.0   # a file's time stamp may trail time.time() by a clock tick


def identity(path: Path) -> dict:
    """What the record keeps of an input entering the inbox, to know it again in failed/ or done/."""
    st = os.lstat(path)
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size}


class Folders:
    """What one settling reads of the queues' folders: each folder read once, however many records ask."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._inodes: dict[Path, dict[int, list[str]]] = {}        # folder -> inode -> names
        self._families: dict[Path, dict[tuple[str, str], list[str]]] = {}   # outbox -> (stem, ext) -> names

    def _by_inode(self, folder: Path) -> dict[int, list[str]]:
        if folder not in self._inodes:
            found: dict[int, list[str]] = {}
            try:
                for e in os.scandir(folder):
                    if e.is_file(follow_symlinks=False) and not e.name.startswith(TEMP_PREFIX):
                        found.setdefault(e.inode(), []).append(e.name)
            except OSError:
                pass
            self._inodes[folder] = found
        return self._inodes[folder]

    def find_input(self, folder: Path, rec: dict) -> str | None:
        """The name in folder of the input rec was made for: by inode (and size: a deleted input's inode may
        have gone to another file since) on its own filesystem, else by its name, numbered as move_into
        numbers, and size."""
        try:
            same_fs = rec.get("ino") is not None and os.stat(folder).st_dev == rec.get("dev")
        except OSError:
            return None
        if same_fs:
            for n in self._by_inode(folder).get(rec["ino"], []):
                try:
                    if os.lstat(folder / n).st_size == rec["size"]:
                        return n
                except OSError:
                    continue
            return None
        for n in numbered(rec["name"]):
            try:
                st = os.lstat(folder / n)
            except FileNotFoundError:
                return None
            except OSError:
                continue
            if rec.get("size") is not None and st.st_size == rec["size"]:
                return n
        return None

    def results_of(self, queue: str, name: str, since: float) -> list[str]:
        """The results in queue's outbox named for input name (NAME_after.EXT, NAME_after-N.EXT) written
        since since, oldest first."""
        outbox = self.cfg.outbox(queue)
        if outbox not in self._families:
            families: dict[tuple[str, str], list[str]] = {}
            try:
                for n in os.listdir(outbox):
                    if not n.startswith(TEMP_PREFIX):
                        stem, ext = os.path.splitext(n)
                        families.setdefault((stem, ext), []).append(n)
                        head, dash, digits = stem.rpartition("-")
                        if dash and digits.isdigit():
                            families.setdefault((head, ext), []).append(n)
            except OSError:
                pass
            self._families[outbox] = families
        found = []
        for n in self._families[outbox].get(os.path.splitext(output_name(name, self.cfg.output.format)), []):
            try:
                st = os.lstat(outbox / n)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime >= since - SLACK_S:
                found.append((st.st_mtime, n))
        return [n for _, n in sorted(found)]

    def where_it_went(self, rec: dict, taken: set[str], read_reason) -> dict:
        """The fields that settle rec (state, result, kept, reason); taken: result names other records hold."""
        cfg, q, name = self.cfg, rec["queue"], rec["name"]
        failed = self.find_input(cfg.failed(q), rec)
        if failed is not None:
            return {"state": "failed", "result": None, "kept": failed,
                    "reason": read_reason(cfg.failed(q) / reason_name(failed))}
        kept = self.find_input(cfg.state_dir("done", q), rec) if cfg.output.keep_inputs else None
        results = [n for n in self.results_of(q, name, rec.get("at", 0.0)) if n not in taken]
        if len(results) == 1:
            return {"state": "done", "result": results[0], "kept": kept, "reason": ""}
        stopped = f"the service stopped before it said where {name} went"
        if results:
            why = f"{stopped}, and {len(results)} results of its name were written since: {', '.join(results[:5])}"
        elif kept is not None:
            why = (f"{stopped}; it was converted (its input is in done/ as {kept}), but no result of it is in "
                   f"{cfg.outbox(q)} (moved away by hand?)")
        else:
            why = (f"{stopped}, and it is in neither the inbox, work/ nor failed/, and no result of it is in "
                   f"{cfg.outbox(q)} (moved away by hand?)")
        return {"state": "unknown", "result": None, "kept": kept, "reason": why}
