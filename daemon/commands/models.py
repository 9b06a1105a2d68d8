"""reverser models --queue Q list | promote VERSION | rollback: the registry, by hand."""

from __future__ import annotations

import getpass
import sys

from ..core.config import load_config
from ..errors import EX_DATAERR, EX_OK, UsageError
from ..learning.registry import Registry, RegistryError, open_registry


def _fmt(x, spec=".2f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def format_versions(reg: Registry) -> str:
    """A table a person can read: one line per version, the champion marked with *."""
    champion = reg.champion_version()
    # The scores are on the run's own held-out training pairs (the share [retrain] val_percent holds out),
    # not on the plates' val folder: "held out" says how many of how many.
    rows = [("", "version", "status", "registered", "parent", "held out", "PSNR", "colorful", "ab AuC",
             "champion's", "gain (sure)", "why")]
    for v in reg.versions():
        m = v.meta
        scores = m.get("metrics") or {}
        theirs = (m.get("champion_metrics") or {}).get("psnr")
        held = m.get("val_pairs", scores.get("pairs"))
        paired = (m.get("rule") or {}).get("paired") or {}
        rows.append(("*" if v.number == champion else "", str(v.number), v.status,
                     str(m.get("registered", m.get("created", "")))[:16].replace("T", " "),
                     _fmt(m.get("parent"), "d"),
                     f"{_fmt(held, 'd')} of {_fmt(m.get('pairs'), 'd')}" if held is not None else "-",
                     _fmt(scores.get("psnr")), _fmt(scores.get("colorfulness"), ".1f"),
                     _fmt(scores.get("auc"), ".1f"), _fmt(theirs),
                     f"{paired['mean_db']:+.2f} ({paired['lower_db']:+.2f})" if paired else "-",
                     str(m.get("why", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append(SCORES_NOTE)
    return "\n".join(line.rstrip() for line in lines)


SCORES_NOTE = ("Scores: on each run's own held-out training pairs (held out: N of its pairs, chosen by name;\n"
               "--val-percent, [retrain] val_percent), not the plates' val folder. champion's: the champion's\n"
               "PSNR on the same pairs. gain (sure): the mean per-image PSNR gain over it, and the least it is\n"
               "with [retrain] promotion_confidence.")


def main(args) -> int:
    cfg = load_config(args.config)
    if not args.queue:
        raise UsageError(f"models: --queue is required (before or after the verb); queues: {', '.join(cfg.queues)}")
    if args.queue not in cfg.queues:
        raise UsageError(f"no queue {args.queue!r} in {cfg.file}; queues: {', '.join(cfg.queues)}")
    who = f"reverser models ({getpass.getuser()})"
    reg = open_registry(cfg, args.queue, who)
    try:
        if args.action == "list":
            if not reg.versions():
                print(f"{args.queue}: no versions yet (no shipped model at {cfg.queues[args.queue].model})")
            else:
                print(format_versions(reg))
        elif args.action == "promote":
            reg.promote(args.version, who, f"promoted by hand from version {reg.champion_version()}")
            print(f"{args.queue}: version {args.version} is the champion; a running service swaps it in "
                  f"between batches")
        else:
            old = reg.champion_version()
            new = reg.rollback(who, f"rolled back by hand from version {old}")
            print(f"{args.queue}: rolled back from version {old} to version {new}")
    except RegistryError as e:
        print(f"reverser models: {e}", file=sys.stderr)
        return EX_DATAERR
    return EX_OK
