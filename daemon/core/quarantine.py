"""Quarantine: a file that cannot be used goes to the queue's failed folder with a note beside it.

One rule for conversion inputs and training pairs alike: the file moves into
outbox/<queue>/failed/ without replacing anything there (NAME-1.EXT, ...), and
NAME.EXT.reason.txt (cut short to fit the file-name limit) says what went
wrong, when, and what to do, in UTF-8 text: a name that is not UTF-8, or
holds control characters, is printed as namebytes.shown() prints it.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from .fs import free_names, move_into, write_atomic
from .names import format_list, reason_name, shown

CONVERT_HINT = ("check that it is a complete {formats} image "
                "(open it in a viewer; copy or export it again if it is cut short)")
TRAINING_HINT = ("drop a corrected file into the training inbox again: both halves of a pair, "
                 "named NAME_before.EXT and NAME_after.EXT, or (colorize) a color photo")


def quarantine(path: Path, failed_dir: Path, name: str, problem: str, hint: str = "", *, queue: str,
               inbox: Path, training: bool = False, writer: str = "") -> Path:
    """Move path into failed_dir as name (never replacing a file) with its reason note; return its new path.

    The note is written first, for the name the file will take: a note that cannot be written (a full
    disk, no file handles left) raises before the file moves, so no file is in failed/ without its reason.
    training: the file came into the training inbox (the note says so, and the
    default advice is about pairs). writer: the instance id for temporary names.
    """
    failed_dir.mkdir(parents=True, exist_ok=True)
    planned = next(n for n in free_names(failed_dir, name) if not os.path.lexists(n))

    def note(final_name: str) -> None:
        text = reason_text(final_name, queue, inbox, problem, hint, training)
        write_atomic(failed_dir, reason_name(final_name), shown(text, keep="\n").encode("utf-8"),
                     on_exists="replace", writer=writer)

    note(planned.name)
    try:
        final = move_into(path, failed_dir, name, writer=writer)
    except BaseException:
        if not os.path.lexists(planned):
            (failed_dir / reason_name(planned.name)).unlink(missing_ok=True)
        raise
    if final.name != planned.name:   # another file took the name meanwhile (or an earlier move is finished)
        note(final.name)
        if not os.path.lexists(planned):
            (failed_dir / reason_name(planned.name)).unlink(missing_ok=True)
    return final


def reason_text(name: str, queue: str, inbox: Path, problem: str, hint: str = "", training: bool = False) -> str:
    """The plain-text note left beside a quarantined file: what went wrong, when, what to do."""
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
    hint = hint or (TRAINING_HINT if training else CONVERT_HINT.format(formats=format_list()))
    what = f"take {name} as training data" if training else f"convert {name}"
    return (f"reverser could not {what}.\n\n"
            f"what went wrong: {problem}\n"
            f"when:            {when}\n"
            f"queue:           {queue}" + (" (training pairs)" if training else "") + "\n"
            f"what to do:      {hint}.\n\n"
            f"To try again, move the file back into the queue's {'training ' if training else ''}inbox folder "
            f"({inbox}),\nand delete this note.\n")
