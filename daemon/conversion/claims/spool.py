"""The claim protocol: inputs move between folders by atomic rename, as in Maildir and Postfix.

    inbox/<q>/NAME --claim--> <state>/work/<q>/<ticket>@NAME --done--> <state>/done/<q>/NAME (or deleted)
                                                             --fail--> outbox/<q>/failed/NAME + NAME.reason.txt

A rename either happens or not, so of two services sharing an inbox exactly
one wins each file; the loser sees the file gone. The ticket names the service
instance that claimed the file, and every instance holds a lock while it runs,
beside its claims (work/.owners/; owners.py): at start-up, files in work/ whose instance
holds no lock there (it crashed or was killed) are claimed again, by a rename to
a ticket of the new instance (so of two instances starting at once, one takes
each), and go back through the pipeline. Locks, not pids, decide, so a reused
pid (after a reboot, or pid 1 in two containers) cannot hide a crashed
instance's files. When the inbox is on another filesystem than <state> (a
shared inbox, several hosts with state folders of their own), claims wait in
inbox/<q>/.reverser-work/ and the locks that guard them in its .owners/, which
every host sharing the inbox sees; a lock in a host's own state folder would
tell the others nothing.

A result and its input cannot move in one step, so a crash between the result's
rename into the outbox and the input's move out of work/ would convert the input
again at the next start. Receipts close that window: the result is written
through outbox/<q>/.reverser-receipt-<ticket>, which stays behind as a second hard
link to it until the input has left work/. At start-up a claimed file whose
receipt has a link count of 2 was converted already: its input goes to done/,
and it is not converted again; who asked is told which result it was (the
receipt's other name) and where the input went, as a finished file would have
told them. A receipt with a count of 1 is an attempt that never placed its
result (a crash while writing it), and the file is converted as any other.

A picture's color points (NAME_hints.json / .png, conversion/claims/sidecar.py) are
claimed after it under the same ticket, work/<q>/<ticket>@NAME_hints.json, and
follow it out: before the picture leaves work/ they are renamed to say where
it goes (<ticket>@.done@..., .failed@, .back@), and they move after it. A
crash between the two leaves them marked, and recovery sends them where their
picture went; a picture recovered without them (killed between the claims)
takes them from the inbox again.

A move out of work/ is link-then-unlink (copy-then-unlink across filesystems).
Cut between the two, the file is in two folders: the next move of it finds the
first copy and finishes (no NAME-1 in done/), and a start-up takes back a link
into failed/ (its reason not yet written) and tries the file again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loguru import logger

from . import companions
from ...core.config import Config
from ...core.fs import RECEIPT_PREFIX, TEMP_PREFIX, move_into, other_link, placed_copy, rename_new
from ...core.names import NAME_MAX, is_hints, output_name
from ...core.quarantine import quarantine
from .owners import Owner

FALLBACK_WORK = ".reverser-work"  # used when the inbox and <state> are on different filesystems


class Lost(Exception):
    """The file was gone when we tried to claim it: another service took it, or its owner moved it away."""


@dataclass(frozen=True)
class Claimed:
    """A file this service owns, in work/."""

    queue: str
    path: Path      # where it is now: work/<q>/<ticket>@NAME
    name: str       # the name it was dropped under
    companions: tuple[str, ...] = ()   # the names of its hints files, claimed beside it under its ticket

    @property
    def ticket(self) -> str:
        """The claim's ticket, '' for a file put into work/ by hand."""
        if self.path.parent.name.endswith("@"):
            return self.path.parent.name[:-1]  # a long name, claimed into work/<q>/<ticket>@/NAME
        ticket, sep, _ = self.path.name.partition("@")
        return ticket if sep else ""


class Spool:
    """One queue's claim, done, quarantine and recovery."""

    def __init__(self, cfg: Config, queue: str, owner: Owner):
        self.queue, self.owner = queue, owner
        self.inbox = cfg.inbox(queue)
        self.done_dir = cfg.state_dir("done", queue)
        self.failed_dir = cfg.failed(queue)
        self.outbox = cfg.outbox(queue)
        self.keep_inputs = cfg.output.keep_inputs
        self.format = cfg.output.format
        for d in (self.inbox, cfg.state_dir("work", queue)):
            d.mkdir(parents=True, exist_ok=True)
        # A claim must be a rename, and a rename cannot cross filesystems: when the
        # inbox is elsewhere (a network share), claimed files wait in a hidden
        # folder inside the inbox instead.
        self.work_dirs = [cfg.state_dir("work", queue), self.inbox / FALLBACK_WORK]
        if os.stat(self.inbox).st_dev == os.stat(self.work_dirs[0]).st_dev:
            self.work = self.work_dirs[0]
        else:
            self.work = self.work_dirs[1]
            self.work.mkdir(exist_ok=True)
            owner.join(self.work)  # every instance claiming here sees our lock beside our claims
            logger.info("queue {}: the inbox is on another filesystem than the state folder; "
                        "claimed files wait in {}", queue, self.work)

    def claim(self, path: Path, name: str = "", work: Path | None = None) -> Claimed:
        """Take path out of the inbox (into work, by default self.work) under a ticket of ours, as name
        (by default its own), by one atomic rename; raise Lost when it is already gone."""
        name, work = name or path.name, work or self.work
        ticket = self.owner.ticket()
        target = work / f"{ticket}@{name}"
        folder = None
        if len(os.fsencode(target.name)) > NAME_MAX:
            # The ticket does not fit beside a name this long: the file keeps its name
            # in a folder named by the ticket instead, work/<q>/<ticket>@/NAME.
            folder = work / f"{ticket}@"
            folder.mkdir()
            target = folder / name
        try:
            os.rename(path, target)
        except BaseException as e:
            if folder is not None:
                folder.rmdir()
            if isinstance(e, FileNotFoundError):
                raise Lost(path) from None
            raise
        return Claimed(self.queue, target, name)

    def take_companions(self, item: Claimed, paths: list[Path]) -> Claimed:
        """Claim paths (the picture's hints files in the inbox) beside item under its ticket, one rename
        each; a file gone meanwhile is skipped. item with them among its companions."""
        return Claimed(item.queue, item.path, item.name, companions.take(item, paths))

    def companion_paths(self, item: Claimed) -> list[Path]:
        """Where item's companions are in work/ now (marked or not); those gone are left out."""
        return [p for p in (companions.now(item, n) for n in item.companions) if p is not None]

    def done(self, item: Claimed) -> Path | None:
        """The input succeeded: keep it in done/ (never replacing an older one) or delete it; its
        companions go the same way after it."""
        companions.mark(item, "done")
        if not self.keep_inputs:
            item.path.unlink(missing_ok=True)
            final = None
        else:
            try:   # the time it was processed, which [output] done_keep_days counts from (conversion/claims/retention.py)
                os.utime(item.path, follow_symlinks=False)
            except OSError:
                pass   # not ours to stamp: it keeps its own time
            final = move_into(item.path, self.done_dir, item.name, writer=self.owner.id)
        for name in item.companions:
            companions.to_done(self, companions.now(item, name), name)
        _left(item)
        return final

    def quarantine(self, item: Claimed, problem: str, hint: str = "") -> Path:
        """Move a failed input to outbox/<q>/failed/ with NAME.reason.txt beside it; return its new path.
        Its companions follow it there, each with a note that names it."""
        companions.mark(item, "failed")
        final = quarantine(item.path, self.failed_dir, item.name, problem, hint, queue=self.queue,
                           inbox=self.inbox, writer=self.owner.id)
        for name in item.companions:
            companions.to_failed(self, companions.now(item, name), name, f"its picture {item.name} failed: {problem}")
        _left(item)
        return final

    def put_back(self, item: Claimed) -> Path:
        """Return an unfinished file to the inbox under its name, for its writer to finish; never replaces a
        file there (FileExistsError: the writer has started a new one under that name meanwhile)."""
        home = self.inbox / item.name
        if os.path.lexists(home):
            raise FileExistsError(home)
        companions.mark(item, "back")   # before the picture goes: a kill between leaves it in work/ with them
        rename_new(item.path, home)
        for name in item.companions:
            companions.to_inbox(self, companions.now(item, name), name)
        _left(item)
        return home

    def receipt(self, item: Claimed) -> str:
        """The name of item's receipt in the outbox ('' when it has no ticket); see the module docstring."""
        return f"{RECEIPT_PREFIX}{item.ticket}" if item.ticket else ""

    def forget_receipt(self, item: Claimed) -> None:
        """The input has left work/: its receipt has done its job."""
        if item.ticket:
            (self.outbox / self.receipt(item)).unlink(missing_ok=True)

    def recover(self, include_own: bool = False,
                settled: Callable[[Claimed, Path | None, Path | None], None] | None = None) -> list[Claimed]:
        """Files in work/ whose claimant is gone (a crash), oldest first; with include_own, ours as well.

        Each is claimed again under a ticket of ours first, by a rename, so that of two services
        starting at once, exactly one takes each. Those whose result was written before the
        crash are moved to done/ here, not returned, and told to settled(item, its result or None
        when no other name of it is found, where the input went: done/, or None when deleted or
        still in work/). Ours (include_own: a reload) are not told again: they were when they finished.
        """
        found = []
        unowned, orphans = self._unowned(include_own)
        for path, name, fate in orphans:
            companions.settle(self, path, name, fate)
        for old in unowned:
            work = old.path.parent.parent if old.path.parent.name.endswith("@") else old.path.parent
            try:
                item = self.claim(old.path, old.name, work)
            except Lost:
                continue  # another service starting at the same time took it
            except OSError as e:
                logger.error("{}: cannot take {} back from work/ ({}); it stays there until the next start",
                             self.queue, old.path, e)
                continue
            item = Claimed(item.queue, item.path, item.name, companions.carry(self, old, item))
            _left(old)
            ours = old.ticket.rpartition("-")[0] == self.owner.id   # a reload's: told when it finished
            if not self._settled(item, self.receipt(old), None if ours else settled):
                found.append(item)
        self._drop_receipts(include_own)
        for item in found:
            self._undo_quarantine(item)
        return found

    def _undo_quarantine(self, item: Claimed) -> None:
        """A quarantine cut short after linking item into failed/ (before its reason was written):
        take that link back, so the file is tried again and ends in exactly one place."""
        try:
            half = placed_copy(item.path, os.lstat(item.path), self.failed_dir, item.name, by_bytes=False)
            if half is not None:
                half.unlink()
                logger.info("{}: {} was being moved to {} when the last run stopped; it is tried again",
                            self.queue, item.name, self.failed_dir)
        except OSError:
            pass  # it is tried again; a quarantine after that finds and reuses the link

    def _settled(self, item: Claimed, receipt_name: str, told=None) -> bool:
        """Whether item's result is in the outbox already (the receipt of its last claim has a second link);
        if so, finish it and tell told(item, result, kept)."""
        if not receipt_name:
            return False
        receipt = self.outbox / receipt_name
        try:
            links = os.lstat(receipt).st_nlink
        except FileNotFoundError:
            return False
        if links < 2:
            receipt.unlink(missing_ok=True)  # written, never placed: convert it again
            return False
        result = other_link(receipt, self.outbox, output_name(item.name, self.format))
        kept = None
        try:
            kept = self.done(item)
        except OSError as e:
            # It stays in work/ under this run's ticket now: its receipt follows it there, or the next start
            # (finding no receipt of that ticket) would convert it a second time.
            own = self.receipt(item)
            if own and own != receipt_name:
                try:
                    os.replace(receipt, self.outbox / own)
                except OSError:
                    pass
            logger.error("{}: {} was converted before the last stop, but moving it out of work/ failed ({}); "
                         "it stays there and is not converted again", self.queue, item.name, e)
        else:
            receipt.unlink(missing_ok=True)
            logger.info("{}: {} was converted before the last stop (its result is {}); not converting it again",
                        self.queue, item.name, result or f"in {self.outbox}")
        if told is not None:
            told(item, result, kept)
        return True

    def _drop_receipts(self, include_own: bool) -> None:
        """Remove receipts whose claim is over (the input left work/) and whose writer no longer runs."""
        try:
            receipts = [e.name for e in os.scandir(self.outbox) if e.name.startswith(RECEIPT_PREFIX)]
        except FileNotFoundError:
            return
        tickets = set()
        for folder in self.work_dirs:
            try:
                tickets |= {e.name.partition("@")[0] for e in os.scandir(folder) if "@" in e.name}
            except FileNotFoundError:
                continue
        for name in receipts:
            ticket = name[len(RECEIPT_PREFIX):]
            owner_id = ticket.rpartition("-")[0]
            mine = owner_id == self.owner.id
            over = (mine and include_own) or (not mine and not self.owner.is_alive(owner_id))
            if ticket not in tickets and over:
                (self.outbox / name).unlink(missing_ok=True)

    def _unowned(self, include_own: bool) -> tuple[list[Claimed], list[tuple[Path, str, str]]]:
        """The claims in work/ whose claimant is gone, oldest first, each with its companions; and the
        companions whose picture has left work/ already, as (path, name, fate: done, failed, back or '')."""
        pictures, beside = {}, {}
        for folder in self.work_dirs:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for e in entries:
                is_dir = e.is_dir(follow_symlinks=False)
                if e.name.startswith(TEMP_PREFIX) or (is_dir and not e.name.endswith("@")):
                    continue
                ticket, sep, name = e.name.partition("@")
                owner_id = ticket.rpartition("-")[0] if sep else ""
                if sep and owner_id == self.owner.id and not include_own:
                    continue
                root = folder.parent if folder == self.work_dirs[0] else folder   # where its owners/ folder is
                if sep and owner_id != self.owner.id and self.owner.is_alive(owner_id, root):
                    continue  # another running service's work in progress (its lock is beside it)
                key = (folder, ticket) if sep else (folder, e.name)
                inside = [(Path(e.path), name if sep else e.name)]
                if is_dir:  # a long name's claim: work/<q>/<ticket>@/NAME, its companions beside it
                    inside = [(p, p.name) for p in Path(e.path).iterdir()]
                    if not inside:
                        Path(e.path).rmdir()  # killed between making the folder and the rename into it
                        continue
                for path, name in inside:
                    fate, bare = companions.fate(name)
                    if fate or is_hints(bare):
                        beside.setdefault(key, []).append((path, bare, fate))
                    else:
                        pictures[key] = (path.lstat().st_mtime_ns, Claimed(self.queue, path, name))
        found = [Claimed(c.queue, c.path, c.name, tuple(n for _, n, _ in beside.pop(key, [])))
                 for key, (_, c) in sorted(pictures.items(), key=lambda kv: kv[1][0])]
        return found, [o for left in beside.values() for o in left]



def _left(item: Claimed) -> None:
    """The input has left work/: remove the folder a long name was claimed into."""
    if item.path.parent.name.endswith("@"):
        try:
            item.path.parent.rmdir()
        except OSError:
            pass
