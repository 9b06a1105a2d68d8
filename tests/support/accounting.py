"""The accounting of a reliability run: where each delivered input ended, and what was lost or done twice."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.support.service import names

if TYPE_CHECKING:
    from tests.support.rig import Rig


_NUMBERED = re.compile(r"^(?P<stem>.*?)(?:-(?P<n>\d+))?(?P<ext>\.[^.]*)$", re.DOTALL)


def _input_stem(name: str, tag: str) -> str | None:
    """'x_after-2.png', '_after' -> 'x' (the numbered suffix and extension dropped)."""
    m = _NUMBERED.match(name)
    if not m:
        return None
    stem = m["stem"]
    return stem[:-len(tag)] if stem.endswith(tag) else None


def input_of(output: str) -> str | None:
    return _input_stem(output, "_after")


@dataclass
class Tally:
    """Where each delivered input ended."""

    inputs: int
    converted: int
    quarantined: int
    lost: list[str]           # neither an output nor a quarantined input
    twice: list[str]          # more than one output, or an output and a quarantine, or done twice
    stray: list[str]          # outputs, quarantined or done files that match no input
    leftover: list[str]       # still in the inbox or work/
    temp: list[str]           # temporary files left behind anywhere in the service's folders


def account(rig: Rig, delivered: list[str], q: str = "colorize") -> Tally:
    """Match the inputs against outbox/<q>/, its failed/ and done/<q>/."""
    stems = {}
    for name in delivered:
        stem = _input_stem(name, "_before")
        assert stem is not None, name
        stems[stem] = name
    outputs = _count(names(rig.outbox(q)), "_after")
    failed = _count([n for n in names(rig.failed(q)) if not n.endswith(".reason.txt")], "_before")
    done = _count(names(rig.done(q)), "_before")
    lost, twice = [], []
    for stem, name in stems.items():
        n_out, n_failed = outputs.pop(stem, 0), failed.pop(stem, 0)
        if n_out + n_failed == 0:
            lost.append(name)
        if n_out + n_failed > 1 or done.pop(stem, 0) > 1:
            twice.append(name)
    stray = [f"{k} x{v}" for d in (outputs, failed) for k, v in d.items()]
    leftover = [n for n in names(rig.inbox(q)) if not n.startswith(".")] + names(rig.work(q))
    return Tally(len(delivered), sum(1 for n in names(rig.outbox(q)) if not n.startswith(".")),
                 sum(1 for n in names(rig.failed(q)) if not n.endswith(".reason.txt")),
                 lost, twice, stray, leftover, temp_files(rig))


def _count(found: list[str], tag: str) -> dict[str, int]:
    """How many visible files there are per input stem."""
    counts: dict[str, int] = {}
    for n in found:
        if n.startswith("."):
            continue
        stem = _input_stem(n, tag)
        counts[stem if stem is not None else n] = counts.get(stem if stem is not None else n, 0) + 1
    return counts


def temp_files(rig: Rig) -> list[str]:
    """Hidden temporary files the service writes (.reverser-*) left anywhere under its three folders,
    and any entry left in work/ (claimed files, and lock files of instances no longer running)."""
    found = []
    for top in (rig.cfg.paths.inbox, rig.cfg.paths.outbox, rig.cfg.paths.state):
        for dirpath, dirnames, filenames in os.walk(top):
            for n in filenames + dirnames:
                if n.startswith(".reverser-") or n.startswith(".staging-"):
                    found.append(os.path.relpath(os.path.join(dirpath, n), rig.root))
    work = rig.cfg.state_dir("work")
    for dirpath, dirnames, filenames in os.walk(work):
        for n in filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), rig.root)
            if rel not in found:
                found.append(rel)
    return sorted(found)


def settled(rig: Rig, q: str = "colorize") -> int:
    """Inputs that have left the pipeline: done, or quarantined."""
    return len(names(rig.done(q))) + sum(1 for n in names(rig.failed(q)) if not n.endswith(".reason.txt"))
