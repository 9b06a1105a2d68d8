"""The pairs intake: training pairs dropped into inbox/<queue>/train/ are checked and filed.

NAME_before.* and NAME_after.* make a pair; the halves may arrive minutes
apart, and a half still alone after [retrain] pair_timeout_minutes is
quarantined into outbox/<queue>/failed/ with a reason. On a colorize queue a
lone color photo (any other image name) is a pair too: its gray half is derived
when training. A pair is filed into <state>/pairs/<queue>/ only when both halves
decode, show the same picture (a size difference is resized when training,
with a note), and neither half's bytes are already there.

Beside the pairs: index.jsonl (one line per filed pair: files, hashes, note)
and counts.json (pairs filed, new since the last training) for `reverser status`.

The watcher decides when a file is complete and calls handle(); it offers a
file left in place again at each reconcile scan, and handle() runs the
timeouts then (sweep() runs them alone). Arrival times are kept in memory: after a restart a waiting half
gets a fresh timeout, never a premature quarantine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from loguru import logger

from unet.data import PairRef, find_pairs, load_pair
from unet.images import ImageError, open_image

from ..core.config import Config
from ..core.fs import append_jsonl, file_lock, move, now_iso, numbered, read_jsonl, sha256_file, write_json
from ..core.names import is_pair_file, pair_half
from ..core.quarantine import quarantine

INDEX, COUNTS, LOCK = "index.jsonl", "counts.json", ".lock"


def read_counts(pairs_dir: Path) -> dict:
    """{"pairs": N, "new": M, "last_training": time or None}: what `reverser status` shows."""
    try:
        counts = json.loads((Path(pairs_dir) / COUNTS).read_text())
    except (OSError, ValueError):
        counts = {}
    return {"pairs": counts.get("pairs", 0), "new": counts.get("new", 0),
            "last_training": counts.get("last_training"), "updated": counts.get("updated")}


def _update_counts(pairs_dir: Path, lone_color: bool, added: int = 0, trained: int | None = None) -> dict:
    # The service's intake and a foreground `reverser train` may both update counts.json.
    with file_lock(pairs_dir / LOCK):
        counts = read_counts(pairs_dir)
        counts["new"] += added
        if trained is not None:
            # Pairs that arrived while the run trained are still new for the next one.
            counts["new"] = max(0, counts["new"] - trained)
            counts["last_training"] = now_iso()
        counts["pairs"] = len(find_pairs([pairs_dir], allow_lone_color=lone_color)) if pairs_dir.is_dir() else 0
        counts["updated"] = now_iso()
        write_json(pairs_dir / COUNTS, counts)
        return counts


def mark_trained(pairs_dir: Path, lone_color: bool, used_new: int) -> dict:
    """After a completed training run: the used_new pairs that were new are new no more."""
    return _update_counts(Path(pairs_dir), lone_color, trained=used_new)


class Refused(Exception):
    """A pair that cannot be filed; the message goes into the reason file."""


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
        self.clock = clock
        self.writer = writer   # the service instance's id, for temporary names
        self.log = log or logger.bind(queue=queue)
        self._waiting: dict[str, dict[str, tuple[Path, float]]] = {}  # NAME -> half -> (path, since)
        self._hashes: dict[str, str] | None = None                    # sha256 -> pair name, loaded lazily
        self._lock = threading.Lock()

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
        outcome = self._handle(Path(getattr(arrival, "path", arrival)))
        self.sweep()
        return outcome

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
                if len(halves) < 2:
                    self.log.info("training pair {}: {} arrived, waiting for its {} half (up to {:g} min)",
                                  name, path.name, "after" if half == "before" else "before",
                                  self.timeout_s / 60)
            if len(halves) < 2:
                return "waiting"
            del self._waiting[name]
            return self._file(name, halves["before"][0], halves["after"][0])

    def sweep(self) -> list[Path]:
        """Quarantine halves that waited longer than the timeout; return them."""
        now, gone = self.clock(), []
        with self._lock:
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
                if not halves:
                    del self._waiting[name]
        return gone

    def counts(self) -> dict:
        return read_counts(self.dest)

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
            self._hashes = {}
            for entry in read_jsonl(self.dest / INDEX):
                for h in entry.get("sha256", {}).values():
                    self._hashes[h] = entry.get("name", "?")
        return self._hashes

    def _free_name(self, name: str) -> str:
        """NAME, or NAME-2, NAME-3 ... when the pairs folder already has a pair called NAME."""
        taken = {(half[0] if (half := pair_half(p.stem)) else p.stem).lower()
                 for p in self.dest.iterdir()} if self.dest.is_dir() else set()
        return next(c for c in numbered(name, first=2, split_ext=False) if c.lower() not in taken)

    def _move_in(self, name: str, before: Path | None, after: Path, hashes: dict, note: str) -> None:
        self.dest.mkdir(parents=True, exist_ok=True)
        final = self._free_name(name)
        targets = [(after, f"{final}_after{after.suffix.lower()}")]
        if before is not None:
            targets.insert(0, (before, f"{final}_before{before.suffix.lower()}"))
        # Both halves go to hidden names first (training skips dot-files), then appear together.
        staged = []
        for src, target in targets:
            tmp = self.dest / f".incoming-{target}"
            move(src, tmp)
            staged.append((tmp, self.dest / target))
        for tmp, dst in staged:
            os.replace(tmp, dst)
        entry = {"name": final, "time": now_iso(), "files": [dst.name for _, dst in staged],
                 "sha256": {dst.name: hashes[src.name] for (src, _), (_, dst) in zip(targets, staged)},
                 "lone_color": before is None, "note": note}
        append_jsonl(self.dest / INDEX, entry)
        for h in entry["sha256"].values():
            self._known_hashes()[h] = final
        counts = _update_counts(self.dest, self.lone_color, added=1)
        kind = "color photo (gray derived)" if before is None else "pair"
        renamed = f" as {final!r} (the name was taken)" if final != name else ""
        self.log.info("training {} {} filed{}: {} pairs, {} new since the last training",
                      kind, name, renamed, counts["pairs"], counts["new"])
        if note:
            self.log.info("training pair {}: note: {}", final, note)

    def _quarantine(self, paths: list[Path], reason: str) -> None:
        """Move files into the queue's failed folder, each with its reason note (core.quarantine)."""
        for path in paths:
            if not os.path.lexists(path):
                continue
            dst = quarantine(path, self.failed, path.name, reason, queue=self.queue, inbox=self.inbox,
                             training=True, writer=self.writer)
            self.log.warning("training file {} refused: {} (moved to {})", path.name, reason, dst)
