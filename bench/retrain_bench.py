"""One scheduled retraining in a running service, measured as a user would see it.

    python bench/retrain_bench.py --base MODEL_DIR --held DIR --base-pairs DIR --val DIR
                                  [--minutes 20] [--threads 1] [--work DIR]

MODEL_DIR is a colorize model trained like the shipped one but without the
pairs in --held; --base-pairs holds the rest of that training set. The
benchmark:

1. scores MODEL_DIR on the --val pairs (PSNR and colorfulness at full size,
   unet.scores.evaluate, as bench/eval_pairs.py does);
2. writes a config in the work folder (its own inbox, outbox and state; queue
   colorize with model = MODEL_DIR and base_pairs = [--base-pairs]; retraining
   on, max_minutes = --minutes, threads = --threads) and starts the real
   service, `python -m daemon run`, as a child process;
3. measures idle conversion throughput: --images generated gray 256x384 JPEG
   befores renamed into inbox/colorize/ at once, timed until every result
   exists;
4. copies the held pairs into inbox/colorize/train/ as a user would (each file
   copied under a hidden temporary name, then renamed) and waits until the
   pairs intake has filed them all (or refused some, with a reason);
5. sets [retrain] cron to the first whole minute at least a minute ahead of
   the local time and reloads the service (SIGHUP, as after editing the
   config), then waits for that scheduled job to start its training child;
6. once the child's training loop runs, measures conversion throughput again,
   the same way with the same count, and checks that the loop was still
   running when the last result appeared: no end of the loop in the child's
   train.log, the child alive, and its time budget not yet spent (a WARNING
   when any fails: the figure then mixes training and idle);
7. waits for the run's report.json (<state>/reports/colorize/<time>/), reads
   the decision, the champion's and challenger's scores on the job's
   held-out pairs and the minutes it took; waits until the service serves the
   champion; measures idle throughput once more (the load on a shared machine
   drifts, so idle is measured before and after and averaged);
8. stops the service with SIGTERM, scores the registry's champion (and a
   rejected challenger) on --val, and prints a summary: before / after PSNR
   and colorfulness, minutes, promoted or not and why, images/s idle and
   while training and their ratio (aim >= 0.5), and the machine.

Everything lands in the work folder: retrain_bench.json (the summary),
sheet.png (before / base / after / truth for a few --val pairs), service.log,
and the service's state (var/reports/colorize/<time>/report.png, train.log).
The work folder must be new or empty: a state folder from an earlier run
would change the schedule (a missed run) and the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.retrain_parts import (  # noqa: E402
    BUDGET_FROM, DROP_SIZE, LOOP_END, LOOP_START, Log, QUEUE, WARM_UP, child_clock, config_text, cpu_seconds,
    cron_at, describe_machine, drop, image_files, machine, say, score, sheet, status, stop, timed_drop, wait,
    write_config,
)
from bench.service_bench import make_inputs, start_service  # noqa: E402
from daemon.learning.counts import read_counts  # noqa: E402
from daemon.learning.registry import Registry  # noqa: E402
from unet.data import find_pairs  # noqa: E402


# -- the measurement -----------------------------------------------------------------------------

def main() -> None:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the colorize model folder trained without --held")
    ap.add_argument("--held", type=Path, required=True,
                    help="the held-back pairs (NAME_before.jpg + NAME_after.jpg), dropped into the train inbox")
    ap.add_argument("--base-pairs", type=Path, required=True,
                    help="the rest of the training set: the queue's base_pairs")
    ap.add_argument("--val", type=Path, required=True, help="pairs to score the models on, before and after")
    ap.add_argument("--minutes", type=float, default=20.0, help="[retrain] max_minutes (default 20)")
    ap.add_argument("--threads", type=int, default=1, help="[retrain] threads for the training child (default 1)")
    ap.add_argument("--nice", type=int, default=10, help="[retrain] nice (default 10, the shipped value)")
    ap.add_argument("--work", type=Path, help="a new or empty scratch folder (default: a new temporary folder)")
    ap.add_argument("--images", type=int, default=100,
                    help="gray 256x384 JPEG befores per throughput measurement (default 100)")
    ap.add_argument("--torch-threads", type=int, default=max(1, cores - 1),
                    help=f"[runtime] torch_threads for conversion, and threads for scoring here "
                         f"(default: CPUs - 1 = {max(1, cores - 1)})")
    ap.add_argument("--device", default="auto", help="[runtime] device (default auto)")
    ap.add_argument("--max-batch", default="auto", help="[runtime] max_batch (default auto)")
    args = ap.parse_args()

    if args.work is None:
        work = Path(tempfile.mkdtemp(prefix="reverser-retrain-bench-"))
    else:
        work = args.work.resolve()
        if work.exists() and any(work.iterdir()):
            raise SystemExit(f"{work} is not empty: give a new or empty --work folder (an earlier run's state "
                             f"would change the schedule and the registry)")
        work.mkdir(parents=True, exist_ok=True)
    say(f"work folder: {work}")
    run(args, work)


def run(args, work: Path) -> None:
    info = machine()
    load_start = os.getloadavg()
    say(f"machine: {describe_machine(info)}; load average {load_start[0]:.1f}")
    torch.set_num_threads(args.torch_threads)

    held = find_pairs([args.held], allow_lone_color=True)
    base_pairs = find_pairs([args.base_pairs], allow_lone_color=True)
    val = find_pairs([args.val])
    if not held or not val:
        raise SystemExit(f"no pairs in {args.held if not held else args.val}")
    both = {p.name for p in held} & {p.name for p in base_pairs}
    if both:
        say(f"WARNING: {len(both)} held pair name(s) are also in --base-pairs (e.g. {sorted(both)[0]}): "
            f"the fine-tune would not see new data")
    say(f"held pairs: {len(held)} in {args.held}; base pairs: {len(base_pairs)} in {args.base_pairs}; "
        f"val pairs: {len(val)} in {args.val}")

    say("scoring the base model on the val pairs")
    base_scores = score(args.base, val)

    stage = work / "stage"
    gen = {k: make_inputs(stage / k, n, "L", DROP_SIZE) for k, n in
           (("warm", WARM_UP), ("idle", args.images), ("training", args.images), ("idle_after", args.images))}

    inbox, outbox, state = work / "inbox" / QUEUE, work / "outbox" / QUEUE, work / "var"
    train_inbox = inbox / "train"
    min_new = max(1, len(held) - max(1, len(held) // 10))
    # Until the pairs are in, a schedule that does not fire during the run (this minute, tomorrow).
    idle_cron = cron_at(datetime.now() - timedelta(minutes=2)).rsplit(" ", 3)[0] + " * * *"
    cfg = work / "config.toml"
    write_config(cfg, config_text(work, args, idle_cron, min_new))
    log = Log(work / "service.log")
    say("starting the service")
    t = time.monotonic()
    proc = start_service(cfg, log.path)
    result: dict = {}
    try:
        say(f"  ready in {time.monotonic() - t:.0f} s, pid {proc.pid}")
        st = status(state)
        service = {"device": st.get("device"), "max_batch": st["queues"][QUEUE].get("max_batch"),
                   "batch_reason": st["queues"][QUEUE].get("batch_reason"),
                   "torch_threads": args.torch_threads, "ready_seconds": round(time.monotonic() - t, 1)}
        drop(gen["warm"], "warm", inbox, outbox)
        idle = timed_drop("idle throughput", gen["idle"], "idle", inbox, outbox, proc.pid)

        # The held pairs, as a user copies them: each file whole under a hidden name, then renamed.
        say(f"copying {len(held)} held pairs into {train_inbox}")
        train_inbox.mkdir(parents=True, exist_ok=True)
        t_pairs = time.monotonic()
        for src in image_files(args.held):
            tmp = train_inbox / f".{src.name}.part"
            shutil.copyfile(src, tmp)
            os.rename(tmp, train_inbox / src.name)
        pairs_dir, failed = state / "pairs" / QUEUE, outbox / "failed"
        names = {p.name for p in held}

        def intake_done():
            if any(not p.name.startswith(".") for p in train_inbox.iterdir()):
                return None
            refused = {n for n in names for f in (failed.iterdir() if failed.is_dir() else [])
                       if f.name.startswith(n + "_") or f.name.startswith(n + ".")}
            counts = read_counts(pairs_dir)
            return (counts, refused) if counts["new"] + len(refused) >= len(held) else None

        counts, refused = wait(intake_done, 600, "the pairs intake to file the held pairs", log)
        intake = {"filed": counts["new"], "refused": sorted(refused), "pairs_in_state": counts["pairs"],
                  "seconds": round(time.monotonic() - t_pairs, 1)}
        say(f"  filed {counts['new']} pair(s), refused {len(refused)}, in {intake['seconds']:.0f} s"
            + (f" (see {failed})" if refused else ""))

        # The schedule: the first whole minute at least a minute from now, then a reload to apply it.
        fire = (datetime.now() + timedelta(seconds=60)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        cron = cron_at(fire)
        mark = log.mark()
        write_config(cfg, config_text(work, args, cron, min_new))
        proc.send_signal(signal.SIGHUP)
        wait(lambda: log.find(r"^Reloaded:|^Reload refused", mark), 300, "the reload", log)
        if log.find(r"^Reload refused", mark):
            raise SystemExit(f"the service refused the new config:\n{log.tail()}")
        wait(lambda: log.find(r"^retraining scheduled: cron", mark), 60, "the new schedule", log)
        say(f"retraining scheduled at {fire:%H:%M} (cron {cron!r}); waiting for the job")

        # The scheduled job starts its training child.
        until = max(0.0, (fire - datetime.now()).total_seconds()) + 300
        started = wait(lambda: log.find(rf"^retrain {QUEUE}: (training a challenger .* report in (.+)|skipped: .*)$",
                                        mark), until, "the scheduled job to start", log, every=0.5)
        if started[1].startswith("skipped"):
            raise SystemExit(f"the scheduled job was skipped: {started[1]}")
        job_seen = time.monotonic()
        report = Path(started[2].strip())
        job_line = next(w for w, m in log.lines(mark) if m.startswith(f"retrain {QUEUE}: training a challenger"))
        say(f"  job started at {job_line[11:19]}: {started[1]}")
        child = int(wait(lambda: (report / "child.pid").is_file() and (report / "child.pid").read_text().strip(),
                         60, "the training child's pid file", log))
        train_log = report / "train.log"
        text = lambda: train_log.read_text(errors="replace") if train_log.is_file() else ""  # noqa: E731

        def loop_running():
            if LOOP_START.search(text()):
                return "running"
            if cpu_seconds(child) is None or (report / "report.json").exists():
                return "gone"
            return None

        if wait(loop_running, 60 * args.minutes + 900, "the training loop to start", log, every=0.5) == "gone":
            raise SystemExit(f"the training child ended before its training loop started; see {train_log}:\n"
                             + "\n".join(text().splitlines()[-15:]))
        say(f"  training child pid {child}: training loop started at {LOOP_START.search(text())[1]} "
            f"({time.monotonic() - job_seen:.0f} s after the job started)")

        training = timed_drop("throughput while training", gen["training"], "train", inbox, outbox, proc.pid, child)
        ended = LOOP_END.search(text())
        training["child_alive_at_end"] = cpu_seconds(child) is not None
        # The loop runs until its time budget is spent: it surely ran while the budget's earliest end
        # (counted from the line before the budget starts, to the second) was still ahead.
        job_start = datetime.strptime(job_line, "%Y-%m-%d %H:%M:%S.%f")
        budget_end = child_clock(BUDGET_FROM.search(text())[1], job_start) + timedelta(minutes=args.minutes)
        training["budget_left_s"] = round((budget_end - datetime.fromisoformat(training["to"])).total_seconds())
        training["loop_running_throughout"] = (ended is None and training["child_alive_at_end"]
                                               and training["budget_left_s"] >= 0)
        if not training["loop_running_throughout"]:
            say("  WARNING: the training loop may have ended before the last result appeared "
                f"({'its end logged at ' + ended[1] if ended else 'its time budget ran out'}"
                f"{'' if training['child_alive_at_end'] else '; the child is gone'}): the figure mixes training "
                "and idle; use a larger --minutes or a smaller --images")

        # The job's end: report.json, and the champion in service.
        job_timeout = 60 * args.minutes * 1.25 + 300 + 180 + 300
        wait(lambda: (report / "report.json").is_file(), job_timeout, "the job's report.json", log, every=1.0)
        job_end = time.monotonic()
        rep = json.loads((report / "report.json").read_text())
        ended = LOOP_END.search(text())
        training["loop"] = {"from": LOOP_START.search(text())[1], "to": ended[1] if ended else None}
        say(f"  job finished: {rep['decision']} ({rep['why']})")
        champion_after = rep.get("champion_after")
        served = wait(lambda: status(state).get("queues", {}).get(QUEUE, {}).get("model", {}).get("version")
                      == champion_after and status(state)["queues"][QUEUE]["model"], 60,
                      f"the service to serve version {champion_after}", log)
        say(f"  serving version {served['version']} ({served['path']})")
        idle_after = timed_drop("idle throughput, after the job", gen["idle_after"], "after", inbox, outbox, proc.pid)
        result = {"service": service, "intake": intake, "cron": cron, "report_dir": str(report), "report": rep,
                  "job_seconds_seen": round(job_end - job_seen, 1), "served": served,
                  "throughput": {"idle_before": idle, "training": training, "idle_after": idle_after}}
    finally:
        code = stop(proc)
        say(f"service stopped (exit status {code})")

    registry = Registry(state / "models" / QUEUE)
    rep = result["report"]
    champion_dir = registry.champion_dir()
    champion_v = registry.champion_version()
    challenger_v = rep.get("version")
    say("scoring the champion (and a rejected challenger) on the val pairs")
    champion_scores = base_scores if champion_v == 1 else score(champion_dir, val)
    challenger_scores = None
    if challenger_v is not None and challenger_v != champion_v:
        try:
            challenger_scores = score(registry.version(challenger_v).path, val)
        except Exception as e:  # noqa: BLE001 - pruned, say: the summary says so
            say(f"  challenger version {challenger_v} cannot be scored: {e}")
    models = {"base": args.base, f"v{champion_v}": champion_dir}
    if challenger_scores is not None:
        models[f"v{challenger_v} (rej)"] = registry.version(challenger_v).path
    if champion_v == 1:
        models.pop(f"v{champion_v}")
    sheet(work / "sheet.png", val, models)

    tp = result["throughput"]
    idle_mean = (tp["idle_before"]["images_per_s"] + tp["idle_after"]["images_per_s"]) / 2
    summary = {
        "machine": info, "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "inputs": {"base": str(args.base), "held": str(args.held), "held_pairs": len(held),
                   "base_pairs": str(args.base_pairs), "base_pair_count": len(base_pairs),
                   "val": str(args.val), "val_pairs": len(val)},
        "settings": {"max_minutes": args.minutes, "threads": args.threads, "nice": args.nice,
                     "torch_threads": args.torch_threads, "min_new_pairs": min_new, "images": args.images,
                     "image_size": list(DROP_SIZE)},
        "val": {"base": base_scores, "champion": champion_scores, "champion_version": champion_v,
                "challenger": challenger_scores, "challenger_version": challenger_v,
                "psnr_change": round(champion_scores["psnr"] - base_scores["psnr"], 3),
                "colorfulness_change": round(champion_scores["colorfulness"] - base_scores["colorfulness"], 3)},
        "job": {"decision": rep["decision"], "why": rep["why"], "started": rep["started"],
                "finished": rep["finished"], "minutes": _minutes(rep["started"], rep["finished"]),
                "train_seconds": rep.get("train_seconds"), "stopped": rep.get("stopped"),
                "train_pairs": rep.get("train_pairs"), "held_out_pairs": rep.get("val_pairs"),
                "held_out_champion": rep.get("champion"), "held_out_challenger": rep.get("challenger"),
                "report": result["report_dir"], "cron": result["cron"]},
        "throughput": {**tp, "idle_mean_images_per_s": round(idle_mean, 3),
                       "share_of_idle": round(tp["training"]["images_per_s"] / idle_mean, 3),
                       "share_of_idle_before": round(tp["training"]["images_per_s"]
                                                     / tp["idle_before"]["images_per_s"], 3)},
        "service": result["service"], "intake": result["intake"], "served": result["served"],
        "work": str(work),
    }
    (work / "retrain_bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(render(summary))
    print(f"\nwritten: {work / 'retrain_bench.json'}, {work / 'sheet.png'}, {work / 'service.log'}; "
          f"the job's report: {result['report_dir']}")


def _minutes(a: str, b: str) -> float:
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 60, 2)


def render(s: dict) -> str:
    v, job, tp, m = s["val"], s["job"], s["throughput"], s["machine"]
    base, champ, chall = v["base"], v["champion"], v["challenger"]
    held = s["inputs"]
    cols = [("base (v1)", base), (f"champion (v{v['champion_version']})", champ)]
    if chall:
        cols.append((f"rejected (v{v['challenger_version']})", chall))

    def row(label: str, key: str, fmt: str, change: str) -> str:
        cells = "".join(f"{format(m[key], fmt):>16}" for _, m in cols[:2])
        rest = "".join(f"{format(m[key], fmt):>16}" for _, m in cols[2:])
        return f"  {label:<24}{cells}{change:>9}{rest}"

    out = [f"Retraining in a running service (queue {QUEUE}), {job['started'][:16].replace('T', ' ')}",
           f"machine:   {describe_machine(m)}",
           f"           load average {s['load_average_start'][0]:.1f} at the start, "
           f"{s['load_average_end'][0]:.1f} at the end",
           f"data:      {held['held_pairs']} held pairs dropped into inbox/{QUEUE}/train/ "
           f"({s['intake']['filed']} filed, {len(s['intake']['refused'])} refused); "
           f"base_pairs {held['base_pair_count']}; val {held['val_pairs']} pairs",
           f"job:       cron {job['cron']!r}, max_minutes {s['settings']['max_minutes']:g}, threads "
           f"{s['settings']['threads']}, nice {s['settings']['nice']}; {job['train_pairs']} pairs trained, "
           f"{job['held_out_pairs']} held out by hash",
           f"           {job['minutes']:.1f} min from start to decision (the child ran {job['train_seconds']} s, "
           f"its training stopped by {job['stopped']})",
           f"decision:  {job['decision'].upper()}: {job['why']}",
           "",
           f"  {'on the ' + str(base['pairs']) + ' val pairs':<24}" + "".join(f"{c:>16}" for c, _ in cols[:2])
           + f"{'change':>9}" + "".join(f"{c:>16}" for c, _ in cols[2:]),
           row("PSNR, dB", "psnr", ".2f", f"{v['psnr_change']:+.2f}"),
           row("colorfulness", "colorfulness", ".1f", f"{v['colorfulness_change']:+.1f}"),
           f"  (truth colorfulness {base['truth_colorfulness']:.1f}; gray baseline {base['gray_psnr']:.2f} dB)"]
    hc, hh = job["held_out_champion"], job["held_out_challenger"]
    if hc and hh:
        out.append(f"  on the job's {job['held_out_pairs']} held-out pairs: champion PSNR {hc['psnr']:.2f} dB, "
                   f"colorfulness {hc['colorfulness']:.1f}; challenger {hh['psnr']:.2f} dB, "
                   f"{hh['colorfulness']:.1f}")
    t = tp["training"]
    checked = ("the training loop ran throughout" if t["loop_running_throughout"]
               else "WARNING: training may have ended before the last result")
    out += ["",
            f"  conversion, {t['images']} gray {DROP_SIZE[0]}x{DROP_SIZE[1]} JPEGs at once "
            f"(batch {s['service']['max_batch']}, torch_threads {s['service']['torch_threads']}, "
            f"device {s['service']['device']})",
            f"  idle, before the job     {tp['idle_before']['images_per_s']:7.2f} images/s",
            f"  while training           {t['images_per_s']:7.2f} images/s   ({checked}; training child "
            f"{t.get('training_child_cores')} cores)",
            f"  idle, after the job      {tp['idle_after']['images_per_s']:7.2f} images/s",
            f"  share of idle (mean)     {tp['share_of_idle']:7.2f}   (aim >= 0.5)"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
