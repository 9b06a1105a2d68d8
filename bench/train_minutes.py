"""How long `reverser train --minutes M` takes, all of it: does it keep to M minutes?

    python bench/train_minutes.py [--minutes 2] [--pairs ../shared/data/plates/train]
                                  [--model models/colorize] [--runs 1] [--threads N] [--work DIR]

Each run writes a config in a fresh folder (queue colorize, model = --model,
its own state), runs the real command, `python -m daemon train --queue
colorize --pairs DIR --minutes M`, as a child process, and times it from
start to exit. It prints the wall time against M and the phases the run
recorded in its report.json ("budget": what went before training, what was
kept for the calibration and scores after it and how it was timed, the
loop's allotted and used seconds, calibration, scoring), with the load
average, since a busy CPU slows the phases around training that the budget
has to leave room for. --threads N runs the command with N torch threads
(OMP_NUM_THREADS; default: torch's, all cores): where another process keeps
a core busy, two threads wait on each other and every phase runs several
times slower than on one. The aim: within M minutes plus a little
(--minutes 2: under 2.5 minutes). Exits 2 when --pairs does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(work: Path, pairs: Path, model: Path, minutes: float, threads: int | None = None) -> dict:
    """One `reverser train` in work/; its wall time, exit status and report.json's budget."""
    work.mkdir(parents=True)
    config = work / "config.toml"
    config.write_text(f'[paths]\ninbox = "inbox"\noutbox = "outbox"\nstate = "var"\n'
                      f'[queues.colorize]\ntask = "colorize"\nmodel = "{model}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load = os.getloadavg()[0]
    t = time.monotonic()
    with open(work / "train.log", "wb") as log:
        rc = subprocess.run([sys.executable, "-m", "daemon", "train", "--config", str(config), "--queue", "colorize",
                             "--pairs", str(pairs), "--minutes", f"{minutes:g}"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=work).returncode
    wall = time.monotonic() - t
    reports = list((work / "var" / "reports" / "colorize").glob("*/report.json"))
    report = json.loads(reports[0].read_text()) if reports else {}
    return {"wall_s": round(wall, 1), "minutes": minutes, "threads": threads, "exit": rc, "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "budget": report.get("budget"),
            "decision": report.get("decision"), "log": str(work / "train.log")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--pairs", type=Path, default=ROOT.parent / "shared" / "data" / "plates" / "train")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "colorize")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch threads of the command (default: torch's)")
    ap.add_argument("--work", type=Path, help="where the runs' folders go (default: a new temporary folder)")
    args = ap.parse_args()
    if not args.pairs.is_dir():
        print(f"train_minutes: no pairs folder {args.pairs}; give --pairs DIR", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="train-minutes-"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; runs in {work}")
    results = []
    for i in range(args.runs):
        r = run_once(work / f"run{i + 1}", args.pairs.resolve(), args.model.resolve(), args.minutes, args.threads)
        results.append(r)
        b = r["budget"] or {}
        phases = ", ".join(f"{k} {v:g}" for k, v in b.items() if k != "minutes")
        print(f"run {i + 1}: {r['wall_s']:.0f} s for --minutes {args.minutes:g} ({60 * args.minutes:.0f} s; "
              f"aim {75 * args.minutes:.0f} s), exit {r['exit']}, {r['decision']}; load {r['load_before']} -> "
              f"{r['load_after']}\n  seconds: {phases}")
    (work / "train_minutes.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
