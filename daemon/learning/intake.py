"""The pairs intake: training pairs dropped into inbox/<queue>/train/ are checked and filed.

NAME_before.* and NAME_after.* make a pair; the halves may arrive minutes
apart, and a half still alone after [retrain] pair_timeout_minutes is
quarantined into outbox/<queue>/failed/ with a reason. On a colorize queue a
lone color photo (any other image name) is a pair too: its gray half is derived
when training. A pair is filed into <state>/pairs/<queue>/ only when both halves
decode, show the same picture (a size difference is resized when training,
with a note), and neither half's bytes are already there.

Beside the pairs: index.jsonl (one line per filed pair: files, hashes, note),
counts.json (pairs filed, new since the last training: counts.py) and refused.json (how
many files were refused, the last ones with their reasons: refusals.py) for
`reverser status`, which also lists the halves waiting (waiting()).

The watcher decides when a file is complete and calls handle(); it offers a
file left in place again at each reconcile scan, and handle() runs the
timeouts then (sweep() runs them alone). Arrival times are kept in memory: after a restart a waiting half
gets a fresh timeout, never a premature quarantine.

A file that cannot be filed for a reason not its own (the state disk full or
read-only, say) stays in the training inbox and is tried again after a pause
that doubles, from RETRY_FIRST_S to RETRY_MAX_S; until then an offer of it is
answered without reading it. The failure is logged once, and the same one
again only counted (the line that says it was filed at last gives the count).

Filing costs the same at any number of pairs: the names taken and the hashes
filed are read once (a listing of pairs/, index.jsonl) and kept up to date in
memory, and counts.json is counted up, not counted again. A pair's files, and
their hidden staging names, fit in the file-name limit: a long NAME is cut short.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from loguru import logger

from unet.data import PairRef, load_pair
from unet.images import ImageError, open_image

from ..core.config import Config
from ..core.fs import append_jsonl, local_iso, move, now_iso, numbered, read_jsonl, sha256_file
from ..core.namebytes import near
from ..core.names import EXT_FORMAT, NAME_MAX, fitted, is_pair_file, name_bytes, pair_half, shown
from ..core.quarantine import quarantine
from .counts import COUNTS, update_counts
from .refusals import Refusals

INDEX = "index.jsonl"
RETRY_FIRST_S, RETRY_MAX_S = 10.0, 600.0   # pauses before a file that could not be filed is tried again
# The longest pair name whose files, NAME_before.EXT with any image extension, fit in a file name.
PAIR_NAME_MAX = NAME_MAX - name_bytes("_before") - max(name_bytes(ext) for ext in EXT_FORMAT)


class Refused(Exception):
    """A pair that cannot be filed; the message goes into the reason file."""


class _NotNow(Exception):
    """Filing paths failed for a reason not theirs (raised from that reason)."""

    def __init__(self, paths: list[Path]):
        super().__init__(paths)
        self.paths = paths


@dataclass
class _Failing:
    """A file that could not be filed, not for its own fault: tried again at next_at."""

    why: str
    tries: int
    next_at: float


class PairIntake:
    """One queue's training inbox. Thread-safe: the watcher may call handle() from several threads."""

    def __init__(self, cfg: Config, queue: str, clock=time.monotonic, log=None, writer: str = ""):
        self.queue = queue
        self.inbox = cfg.train_inbox(queue)
        self.dest = cfg.state_dir("pairs", queue)
        self.failed = cfg.failed(queue)
        self.timeout_s = cfg.retrain.pair_timeout_minutes * 60
        self.lone_color = cfg.queues[queue].task == "colorize"
        self.max_pixels = cfg.limits.max_pixels
        self.max_bytes = cfg.limits.max_file_mb * 1e6
        self.clock, self.near = clock, partial(near, config_file=cfg.file)   # a path as the log shows it
        self.writer = writer   # the service instance's id, for temporary names
        self.log = log or logger.bind(queue=queue)
        self._waiting: dict[str, dict[str, tuple[Path, float]]] = {}  # NAME -> half -> (path, since)
        self._said: set[Path] = set()   # halves whose wait was logged: once each, when offered again alone
        self._hashes: dict[str, str] | None = None                    # sha256 -> pair name, loaded lazily
        self._taken: set[str] | None = None                           # pair names in dest (lower case), lazily
        self._failing: dict[Path, _Failing] = {}                      # path -> its failure, while it lasts
        self._counted = False       # counts.json's pair count was counted by this intake (then it counts up)
        self._uncounted = 0         # pairs filed whose counts.json update failed (a full disk): added next time
        self._lock = threading.Lock()
        self.refusals = Refusals(self.dest, self.failed)   # its own lock: status never waits for a pair's check

    def carry_from(self, old: "PairIntake") -> None:
        """A reload's new intake takes over the halves the old one was waiting on, with their clocks and
        whether their wait was logged, when it watches the same folder (a reload is no new arrival)."""
        if old.inbox == self.inbox:
            with old._lock:
                self._waiting, self._said = old._waiting, old._said

    def scan(self) -> None:
        """Handle every file in the training inbox as complete (start-up, or without a watcher)."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.inbox.iterdir()):
            if is_pair_file(path.name):
                self.handle(path)

    def handle(self, arrival) -> str:
        """Take one complete file (a path, or the watcher's Arrival): 'filed', 'waiting', 'refused' or 'ignored'.

        The watcher offers a file it left in place again at each reconcile scan,
        so a waiting half comes back here, and its timeout is checked then.
        """
        path = Path(getattr(arrival, "path", arrival))
        failing = self._failing.get(path)
        if failing is not None and self.clock() < failing.next_at:
            return "waiting"  # not read: to the watcher, a read is an event, and an event another offer
        try:
            outcome = self._handle(path)
        except _NotNow as e:
            outcome = self._failed(e.paths, e.__cause__)
        except Exception as e:  # the failed folder cannot take a refused file, or a bug: not the file's fault
            outcome = self._failed([path], e)
        else:
            self._recovered(path, outcome)
        self.sweep()
        return outcome

    def _failed(self, paths: list[Path], error: BaseException) -> str:
        """Leave paths (a file, or a pair's halves) in the inbox and try again after a pause; log a new failure
        once."""
        why = f"{error.strerror or error}" if isinstance(error, OSError) else f"{type(error).__name__}: {error}"
        with self._lock:
            old = self._failing.get(paths[0])
            tries = 1 if old is None or old.why != why else old.tries + 1
            pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (tries - 1))
            record = _Failing(why, tries, self.clock() + pause)
            for p in paths:
                self._failing[p] = record
        if tries == 1:
            log = self.log if isinstance(error, OSError) else self.log.opt(exception=error)
            log.warning("training file {} cannot be filed now: {}. It stays in {} and is tried again in {:g} s, "
                        "then after longer pauses (the same failure again is counted, not logged)",
                        " and ".join(p.name for p in paths), why, self.near(self.inbox), pause)
        else:
            self.log.debug("training file {}: {} again (try {}); next try in {:g} s", paths[0].name, why, tries,
                           pause)
        return "waiting"

    def _recovered(self, path: Path, outcome: str) -> None:
        """path was handled: forget its failure; say after how many tries it went through."""
        if outcome == "waiting" or path not in self._failing:
            return
        with self._lock:
            record = self._failing.pop(path, None)
            for p in [p for p, r in self._failing.items() if r is record]:
                del self._failing[p]
        if record is not None:
            self.log.info("training file {} {} after {} failed tr{} ({})", path.name, outcome, record.tries,
                          "y" if record.tries == 1 else "ies", record.why)

    def _handle(self, path: Path) -> str:
        with self._lock:
            if not is_pair_file(path.name) or not os.path.lexists(path):
                return "ignored"
            if path.is_symlink() or not path.is_file():
                self._quarantine([path], f"{path.name} is not a regular file (a link, a pipe or a device); "
                                         f"drop the image file itself")
                return "refused"
            half = pair_half(path.stem)
            if half is None:
                if not self.lone_color:
                    self._quarantine([path], f"{path.name} is not named NAME_before.EXT or NAME_after.EXT. "
                                             f"Queue {self.queue!r} learns from pairs: drop both halves, "
                                             f"named alike")
                    return "refused"
                return self._file(path.stem, None, path)
            name, half = half
            halves = self._waiting.setdefault(name, {})
            held = halves.get(half)
            if held is not None and held[0] != path:
                if held[0].exists():
                    self._quarantine([path], f"{held[0].name} is already waiting as the {half} half of "
                                             f"{name!r}; one pair has one {half}. Rename one of them")
                    return "refused"
                held = None  # the earlier file is gone: this one takes its place
            if held is None:
                halves[half] = (path, self.clock())
            elif len(halves) < 2 and path not in self._said:
                # Offered again and still alone: worth a line now (its other half, dropped with it, would
                # have come within moments, and then the pair's one line says it was filed).
                self._said.add(path)
                self.log.info("training pair {}: {} is waiting for its {} half (up to {:g} min, then refused)",
                              name, path.name, "after" if half == "before" else "before", self.timeout_s / 60)
            if len(halves) < 2:
                return "waiting"
            del self._waiting[name]
            self._said.difference_update(p for p, _ in halves.values())
            return self._file(name, halves["before"][0], halves["after"][0])

    def sweep(self) -> list[Path]:
        """Quarantine halves that waited longer than the timeout; return them."""
        now, gone = self.clock(), []
        with self._lock:
            for path in [p for p in self._failing if not os.path.lexists(p)]:
                del self._failing[path]  # taken away by its owner while it waited for a retry
            for name, halves in list(self._waiting.items()):
                for half, (path, since) in list(halves.items()):
                    if not path.exists():
                        del halves[half]
                    elif now - since > self.timeout_s:
                        other = "after" if half == "before" else "before"
                        self._quarantine([path], f"{path.name} waited {(now - since) / 60:.0f} minutes for "
                                                 f"{name}_{other}.* and none came (pair_timeout_minutes = "
                                                 f"{self.timeout_s / 60:g}). Drop both halves of a pair into "
                                                 f"{self.inbox}")
                        gone.append(path)
                        del halves[half]
                        self._said.discard(path)
                if not halves:
                    del self._waiting[name]
        return gone

    def counts(self) -> dict:
        return read_counts(self.dest)

    def waiting(self, limit: int) -> tuple[int, list[dict]]:
        """Halves waiting for their partner: how many, and the limit oldest (the next to be refused), each
        with the partner it waits for, since when (this run: a restart starts its timeout again) and how long
        it may still wait."""
        # Read without _lock, which a large pair being checked holds for seconds; copying a dict is one step
        # under the GIL, so the copy is whole.
        halves = [(name, half, path, since) for name, h in list(self._waiting.items())
                  for half, (path, since) in list(h.items()) if len(h) == 1]
        now, wall = self.clock(), time.time()
        out = []
        for name, half, path, since in sorted(halves, key=lambda t: t[3])[:limit]:
            other = "after" if half == "before" else "before"
            out.append({"name": shown(path.name), "waits_for": shown(f"{name}_{other}.*"),
                        "since": local_iso(wall - (now - since)), "waited_seconds": round(now - since),
                        "refused_in_seconds": round(max(0.0, self.timeout_s - (now - since)))})
        return len(halves), out

    def refused(self) -> tuple[int, list[dict], int]:
        """Training files refused (refusals.py): how many are still in the failed folder, those, and how many
        were refused before those."""
        return self.refusals.listing()

    # -- filing --

    def _file(self, name: str, before: Path | None, after: Path) -> str:
        halves = [p for p in (before, after) if p is not None]
        try:
            note = self._check(name, before, after)
            hashes = self._check_new(halves)
            self._move_in(name, before, after, hashes, note)
        except Refused as e:
            self._quarantine(halves, str(e))
            return "refused"
        except Exception as e:
            raise _NotNow(halves) from e
        return "filed"

    def _check(self, name: str, before: Path | None, after: Path) -> str:
        """Both halves decode and fit together; return a note for a size difference (or '')."""
        sizes = {}
        for label, path in (("before", before), ("after", after)):
            if path is None:
                continue
            if path.stat().st_size > self.max_bytes:
                raise Refused(f"{path.name} is larger than limits.max_file_mb = {self.max_bytes / 1e6:g}")
            try:
                sizes[label] = open_image(path, self.max_pixels).image.size
            except ImageError as e:
                raise Refused(f"the {label} half {path.name} of pair {name!r} cannot be used: {e}. "
                              f"Send the pair again with a readable image") from None
        try:
            # The same check training applies, so every filed pair is one training can use.
            load_pair(PairRef(name, before, after), self.max_pixels)
        except (ImageError, OSError) as e:
            raise Refused(f"pair {name!r}: {e}") from None
        if before is not None and sizes["before"] != sizes["after"]:
            (bw, bh), (aw, ah) = sizes["before"], sizes["after"]
            return (f"{after.name} is {aw}x{ah} and {before.name} {bw}x{bh}: "
                    f"the after is resized to the before's size when training")
        return ""

    def _check_new(self, halves: list[Path]) -> dict[str, str]:
        known = self._known_hashes()
        hashes = {p.name: sha256_file(p) for p in halves}
        for fname, h in hashes.items():
            if h in known:
                raise Refused(f"{fname} is a duplicate: the same bytes are already filed as part of pair "
                              f"{known[h]!r} in {self.dest}. A picture counts once (twice would bias training "
                              f"and could leak into the held-out pairs)")
        return hashes

    def _known_hashes(self) -> dict[str, str]:
        if self._hashes is None:
            hashes = {}   # kept only once read whole: a read that fails is tried again, never taken as empty
            for entry in read_jsonl(self.dest / INDEX):
                for h in entry.get("sha256", {}).values():
                    hashes[h] = entry.get("name", "?")
            self._hashes = hashes
        return self._hashes

    def _taken_names(self) -> set[str]:
        """The pair names in the pairs folder, lower case: listed once, then kept up to date."""
        if self._taken is None:
            self._taken = {(half[0] if (half := pair_half(p.stem)) else p.stem).lower()
                           for p in self.dest.iterdir()} if self.dest.is_dir() else set()
        return self._taken

    def _free_name(self, name: str, exts: list[str]) -> str:
        """NAME, or NAME-2, NAME-3 ... when the pairs folder already has a pair called NAME; cut short to fit."""
        taken = self._taken_names()
        for c in numbered(name, first=2, split_ext=False, limit=PAIR_NAME_MAX):
            # A file put there by hand since the listing is seen too (two lookups, at any number of pairs).
            if c.lower() not in taken and not any(os.path.lexists(self.dest / f"{c}{e}") for e in exts):
                return c
        raise Refused(f"no free name for pair {name!r} in {self.dest}")

    def _move_in(self, name: str, before: Path | None, after: Path, hashes: dict, note: str) -> None:
        self.dest.mkdir(parents=True, exist_ok=True)
        halves = [("before", before), ("after", after)] if before is not None else [("after", after)]
        final = self._free_name(name, [f"_{h}{p.suffix.lower()}" for h, p in halves])
        targets = [(src, f"{final}_{h}{src.suffix.lower()}") for h, src in halves]
        # Both halves go to hidden names first (training skips dot-files), the index line is written, and
        # then they appear together. A failure before that (a full disk) sends them back to the inbox.
        staged = []
        try:
            for i, (src, target) in enumerate(targets):
                tmp = self.dest / fitted(f".incoming-{i}-{target}")
                move(src, tmp)
                staged.append((src, tmp, self.dest / target))
            entry = {"name": final, "time": now_iso(), "files": [dst.name for _, _, dst in staged],
                     "sha256": {dst.name: hashes[src.name] for src, _, dst in staged},
                     "lone_color": before is None, "note": note}
            append_jsonl(self.dest / INDEX, entry)
        except BaseException:
            for src, tmp, _ in reversed(staged):
                move(tmp, src)
            raise
        for _, tmp, dst in staged:
            os.replace(tmp, dst)
        self._taken_names().add(final.lower())
        for h in entry["sha256"].values():
            self._known_hashes()[h] = final
        counts = self._count_in()
        kind = "color photo (gray derived)" if before is None else "pair"
        renamed = f" as {final!r} (the name was taken)" if final != name else ""
        self.log.info("training {} {} filed{}: {} pairs, {} new since the last training",
                      kind, name, renamed, counts["pairs"], counts["new"])
        if note:
            self.log.info("training pair {}: note: {}", final, note)

    def _count_in(self) -> dict:
        """counts.json with one more pair (and any whose update failed before); its old values if it fails."""
        try:
            counts = update_counts(self.dest, self.lone_color, added=1 + self._uncounted, recount=not self._counted)
        except OSError as e:
            self._uncounted += 1
            self.log.warning("cannot update {}: {}; the pair is filed, and counted at the next filing",
                             self.dest / COUNTS, e.strerror or e)
            return read_counts(self.dest)
        self._counted, self._uncounted = True, 0
        return counts

    def _quarantine(self, paths: list[Path], reason: str) -> None:
        """Move files into the queue's failed folder, each with its reason note (core.quarantine)."""
        for path in paths:
            if not os.path.lexists(path):
                continue
            dst = quarantine(path, self.failed, path.name, reason, queue=self.queue, inbox=self.inbox,
                             training=True, writer=self.writer)
            self.log.warning("training file {} refused: {} (moved to {})", path.name, reason, self.near(dst))
            self.refusals.note(path, dst, reason)
