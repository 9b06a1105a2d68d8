"""A claimed picture's companions: its hints files, claimed beside it under its ticket (spool.py's protocol).

    inbox/<q>/NAME_hints.json --take--> work/<q>/<ticket>@NAME_hints.json
        --mark, before the picture moves--> work/<q>/<ticket>@.done@NAME_hints.json (.failed@, .back@)
        --after the picture--> done/<q>/ (or deleted), failed/ with a reason note, or back to the inbox

A companion left in work/ without its picture (a kill between the picture's
move and its own) goes where its mark says (settle); one recovered with its
picture drops its mark and follows the picture's new ticket (carry). Items
are spool.Claimed (path, ticket, companions); spool is the Spool whose folders
they move between.
"""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from ...core.fs import move_into, rename_new
from ...core.quarantine import quarantine

# Where a picture's companions go, said in their names before the picture leaves work/.
FATES = {"done": ".done@", "failed": ".failed@", "back": ".back@"}


def path_of(item, name: str, mark: str = "") -> Path:
    """Where item's companion name is claimed: beside it, under its ticket (inside its folder for a long name)."""
    if item.path.parent.name.endswith("@"):
        return item.path.parent / f"{mark}{name}"
    return item.path.parent / f"{item.ticket}@{mark}{name}"


def now(item, name: str) -> Path | None:
    """item's companion name where it is now, marked or not; None when it is gone."""
    for mark in ("", *FATES.values()):
        path = path_of(item, name, mark)
        if os.path.lexists(path):
            return path
    return None


def fate(name: str) -> tuple[str, str]:
    """A name in work/ (after its ticket) -> (the fate its mark says, or '', the name without the mark)."""
    for said, mark in FATES.items():
        if name.startswith(mark):
            return said, name[len(mark):]
    return "", name


def take(item, paths: list[Path]) -> tuple[str, ...]:
    """Claim paths beside item under its ticket, one rename each (a file gone meanwhile is skipped); the
    names of all its companions now."""
    taken = list(item.companions)
    for path in paths:
        if path.name in taken:
            continue
        try:
            os.rename(path, path_of(item, path.name))
        except FileNotFoundError:
            continue
        taken.append(path.name)
    return tuple(taken)


def mark(item, where: str) -> None:
    """Say in item's companions' names where the picture goes (done, failed, back), before it goes."""
    for name in item.companions:
        found = now(item, name)
        if found is not None:
            os.rename(found, path_of(item, name, FATES[where]))


def carry(spool, old, item) -> tuple[str, ...]:
    """old's companions under item's ticket (their marks dropped: the picture is still here, so it has not
    gone where they said); the names carried."""
    taken = []
    for name in old.companions:
        found = now(old, name)
        if found is None:
            continue
        try:
            os.rename(found, path_of(item, name))
        except OSError as e:
            logger.error("{}: cannot take {} back from work/ ({}); it stays there until the next start",
                         spool.queue, found, e)
            continue
        taken.append(name)
    return tuple(taken)


def to_done(spool, path: Path | None, name: str) -> None:
    if path is None:
        return
    if spool.keep_inputs:
        move_into(path, spool.done_dir, name, writer=spool.owner.id)
    else:
        path.unlink(missing_ok=True)


def to_failed(spool, path: Path | None, name: str, problem: str) -> None:
    if path is not None:
        quarantine(path, spool.failed_dir, name, problem, "drop the picture and its points again",
                   queue=spool.queue, inbox=spool.inbox, writer=spool.owner.id)


def to_inbox(spool, path: Path | None, name: str) -> None:
    """A companion back to the inbox beside its picture; where a new file of its name waits there, the old
    one goes to failed/ with its reason."""
    if path is None:
        return
    try:
        rename_new(path, spool.inbox / name)
    except FileExistsError:
        to_failed(spool, path, name, "a newer file of its name was dropped while it was claimed")


def settle(spool, path: Path, name: str, said: str) -> None:
    """A companion whose picture left work/ before it (a kill between the two): where its mark says."""
    try:
        if said == "done":
            to_done(spool, path, name)
        elif said == "failed":
            to_failed(spool, path, name, "its picture failed (its reason is beside it)")
        else:
            to_inbox(spool, path, name)
    except OSError as e:
        logger.error("{}: cannot move {} out of work/ ({}); it stays there until the next start",
                     spool.queue, path, e)
        return
    if path.parent.name.endswith("@"):
        try:
            path.parent.rmdir()
        except OSError:
            pass
