"""The retraining job: fine-tune the champion in a child process; promote only a better model.

One run for one queue:
  1. skip (with a log line) when fewer than [retrain] min_new_pairs arrived since the last run;
  2. start `python -m daemon.challenger` with [retrain] threads and nice, on the accumulated
     pairs plus the queue's base_pairs, for at most max_minutes (killed past a deadline);
  3. decide(): the challenger is promoted only when it beats the champion's PSNR by the margin
     on the same held-out pairs, is not less colorful (colorize), and beats the gray and
     mean-tint baselines; otherwise it is registered as rejected, with its scores;
  4. record the decision in the registry history and the run's report folder.
A child that crashes, is killed or finds a NaN changes nothing but the history: the
champion keeps serving. `reverser train` reuses plan() and conclude() in the foreground.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from loguru import logger

from .challenger import PARENT_ENV, RESULT, SHEET, TrainJob
from .config import Config
from .intake import mark_trained, read_counts
from .registry import Registry, now_iso, open_registry
from .report import COLUMNS, draw_report, new_report_dir, write_report_json

# "Without a worse colorfulness": a drop within 5% is noise between nights, not a duller model.
COLOR_TOLERANCE = 0.05
KILL_GRACE_S = 120        # after SIGTERM at the deadline, how long the child may take to finish scoring


class Busy(Exception):
    """Another training run for the queue holds its lock."""


@dataclass
class Outcome:
    queue: str
    decision: str               # promoted | rejected | failed | skipped | written (--out)
    why: str
    version: int | None = None  # the challenger's registry version
    champion: int | None = None  # the champion after the run
    report: Path | None = None


def decide(task: str, challenger: dict, champion: dict | None, margin: float,
           force: bool = False, no_promote: bool = False) -> tuple[bool, str]:
    """(promote?, why) by the promotion rule; force and no_promote override it, and say so."""
    psnr = challenger.get("psnr", math.nan)
    faults = []
    if not math.isfinite(psnr):
        faults.append("its PSNR is not a number")
    if champion is not None and math.isfinite(psnr):
        gain = psnr - champion["psnr"]
        if gain < margin:
            faults.append(f"PSNR {psnr:.2f} dB is {gain:+.2f} dB against the champion's {champion['psnr']:.2f}, "
                          f"short of the margin of {margin:g} dB")
        if task == "colorize" and challenger["colorfulness"] < champion["colorfulness"] * (1 - COLOR_TOLERANCE):
            faults.append(f"it is less colorful ({challenger['colorfulness']:.1f} against the champion's "
                          f"{champion['colorfulness']:.1f})")
    for key, label in (("gray_psnr", "gray"), ("tint_psnr", "mean-tint")):
        if key in challenger and math.isfinite(psnr) and psnr < challenger[key] + margin:
            faults.append(f"it does not beat the {label} baseline ({psnr:.2f} dB against {challenger[key]:.2f})")
    good = _summary(challenger, champion)
    if force:
        return True, f"forced (--force): {good}" + (f"; by the rule it would fail: {'; '.join(faults)}"
                                                      if faults else "")
    if faults:
        return False, "; ".join(faults)
    if no_promote:
        return False, f"not promoted (--no-promote), though it passes the rule: {good}"
    return True, good


def _summary(ch: dict, champ: dict | None) -> str:
    parts = [f"PSNR {champ['psnr']:.2f} -> {ch['psnr']:.2f} dB" if champ else f"PSNR {ch.get('psnr', math.nan):.2f} dB"]
    if "colorfulness" in ch and "tint_psnr" in ch:
        parts.append(f"colorfulness {champ['colorfulness']:.1f} -> {ch['colorfulness']:.1f}" if champ
                     else f"colorfulness {ch['colorfulness']:.1f}")
    base = [f"{label} {ch[k]:.2f}" for k, label in (("gray_psnr", "gray"), ("tint_psnr", "mean tint")) if k in ch]
    if base:
        parts.append("baselines " + ", ".join(base) + " dB")
    return "; ".join(parts)


@contextmanager
def training_lock(registry_root: Path):
    """One training run per queue at a time, across processes (the service and `reverser train`)."""
    registry_root.mkdir(parents=True, exist_ok=True)
    with open(registry_root / ".train.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another training run for {registry_root.name!r} is in progress "
                       f"(the service's scheduled job, or a `reverser train`); try again when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pair_folders(cfg: Config, queue: str, given: list[Path] | None = None) -> tuple[str, ...]:
    """--pairs folders when given; else the accumulated pairs plus the queue's base_pairs (those that exist)."""
    if given:
        missing = [p for p in given if not Path(p).is_dir()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: pairs folder not found")
        return tuple(str(Path(p).resolve()) for p in given)
    folders = [cfg.state_dir("pairs", queue)]
    for base in cfg.queues[queue].base_pairs:
        if base.is_dir():
            folders.append(base)
        else:
            logger.warning("[queues.{}] base_pairs: {} does not exist; training without it", queue, base)
    return tuple(str(p) for p in folders if p.is_dir())


def conclude(cfg: Config, queue: str, job: TrainJob, result: dict | None, *, who: str, started: str,
             registry: Registry | None = None, out: Path | None = None, force: bool = False,
             no_promote: bool = False, error: str | None = None) -> Outcome:
    """Decide, register (or write --out), report and log one finished (or failed) run."""
    task, report = cfg.queues[queue].task, Path(job.report)
    log = logger.bind(queue=queue)
    before = registry.champion_version() if registry else None
    data = {"queue": queue, "who": who, "started": started, "finished": now_iso(), "task": task,
            "margin": cfg.retrain.margin, "champion_before": before, "job": asdict(job)}
    if result is None or "error" in result:
        why = (result or {}).get("error") or error or "the training child gave no result"
        if registry:
            registry.record("failed", who, why, version=None, frm=before, to=before, report=str(report))
        shutil.rmtree(job.out, ignore_errors=True)
        log.error("retrain {}: training failed, the champion (version {}) keeps serving: {}", queue, before, why)
        outcome = Outcome(queue, "failed", why, None, before, report)
        _finish_report(report, data, outcome, result or {}, task)
        return outcome

    challenger, champion = result["metrics"], result.get("champion_metrics")
    promote, why = decide(task, challenger, champion, cfg.retrain.margin, force, no_promote)
    if registry is not None and promote and not force and before != job.parent:
        # Someone promoted or rolled back by hand while this trained: the scores compare with a model
        # that no longer serves, and a person's choice wins over a stale comparison.
        promote, why = False, (f"the champion changed from version {job.parent} to {before} while this trained; "
                               f"not promoted (it scored: {why})")
    if registry is not None:
        version = registry.add(Path(job.out), promote, who, why, report=str(report))
        after = registry.champion_version()
        decision = "promoted" if promote else "rejected"
        log.info("retrain {}: version {} {} ({}); champion is version {}", queue, version, decision, why, after)
    else:
        _replace_folder(Path(job.out), out)
        version, after, decision = None, None, "written"
        why = f"written to {out}; the registry is untouched. " + (
            f"Against the model it started from: {why}" if champion else _summary(challenger, None))
        log.info("train {}: model written to {}: {}", queue, out, _summary(challenger, champion))
    outcome = Outcome(queue, decision, why, version, after, report)
    _finish_report(report, data, outcome, result, task)
    return outcome


def _finish_report(report: Path, data: dict, outcome: Outcome, result: dict, task: str) -> None:
    data.update(decision=outcome.decision, why=outcome.why, version=outcome.version,
                champion_after=outcome.champion, challenger=result.get("metrics"),
                champion=result.get("champion_metrics"), pairs=result.get("pairs"),
                train_pairs=result.get("train_pairs"), val_pairs=result.get("val_pairs"),
                val_names=result.get("val_names"), data_fingerprint=result.get("data_fingerprint"),
                stopped=result.get("stopped"), train_seconds=result.get("train_seconds"),
                history=result.get("history", []))
    write_report_json(report, data)
    from PIL import Image

    rows = []
    for row in result.get("sheet") or []:
        rows.append((row["name"], [Image.open(report / SHEET / row[k]) for k in COLUMNS]))
    draw_report(report / "report.png", _header(data, outcome, task), data["history"], rows)
    shutil.rmtree(report / SHEET, ignore_errors=True)
    (report / RESULT).unlink(missing_ok=True)  # folded into report.json


def _header(data: dict, outcome: Outcome, task: str) -> list[str]:
    v = f"version {outcome.version}" if outcome.version else "challenger"
    lines = [f"{data['queue']} ({task}): {v} {outcome.decision.upper()}  -  {data['finished'][:16].replace('T', ' ')}"]
    words, line = outcome.why.split(), ""
    for w in words:  # wrap the reason at about 110 characters
        if len(line) + len(w) > 110:
            lines.append(line)
            line = ""
        line += ("" if not line else " ") + w
    lines.append(line)
    ch, champ = data.get("challenger"), data.get("champion")
    if ch:
        lines.append(f"held-out pairs: {data['val_pairs']}, training pairs: {data['train_pairs']}, "
                     f"trained {data['train_seconds']} s ({data['stopped']}); champion before: "
                     f"version {data['champion_before']}")
        lines.append("challenger: " + _scores(ch) + ("   champion: " + _scores(champ) if champ else ""))
    return lines


def _scores(m: dict) -> str:
    s = f"PSNR {m['psnr']:.2f} dB"
    if "colorfulness" in m and "tint_psnr" in m:
        s += f", colorfulness {m['colorfulness']:.1f} (truth {m['truth_colorfulness']:.1f})"
    return s


def _replace_folder(new: Path, dest: Path) -> None:
    """Put a finished model folder at dest, replacing an older one with two renames."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)


class Retrainer:
    """The service's training runs: one at a time, each in a child process; stop() kills it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.child: subprocess.Popen | None = None   # the running training child, if any
        self._stopping = threading.Event()

    def run_due(self) -> bool:
        """The scheduled job: every queue in turn. False when stop() interrupted it."""
        for queue in self.cfg.queues:
            if self._stopping.is_set():
                return False
            try:
                self.run(queue)
            except Busy as e:
                logger.warning("retrain {}: skipped: {}", queue, e)
        return not self._stopping.is_set()

    def stop(self) -> None:
        """The service is stopping: kill a training child now (its run is recorded as failed)."""
        self._stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            logger.info("stopping the training child (pid {}); the champion keeps serving", child.pid)
            child.kill()

    def run(self, queue: str, *, check_new: bool = True, minutes: float | None = None,
            epochs: int | None = None, who: str = "retrain (scheduled)") -> Outcome:
        """One run for one queue, training in a child process; see the module docstring."""
        cfg, rc = self.cfg, self.cfg.retrain
        log = logger.bind(queue=queue)
        pairs_dir = cfg.state_dir("pairs", queue)
        counts = read_counts(pairs_dir)
        if check_new and counts["new"] < rc.min_new_pairs:
            why = (f"{counts['new']} new pairs since the last training, fewer than min_new_pairs = "
                   f"{rc.min_new_pairs}")
            log.info("retrain {}: skipped: {}", queue, why)
            return Outcome(queue, "skipped", why)
        registry = open_registry(cfg, queue, who)
        with training_lock(registry.root):
            registry.clean_staging()
            started = now_iso()
            report = new_report_dir(cfg.state_dir("reports", queue))
            job = TrainJob(queue=queue, task=cfg.queues[queue].task, pairs=pair_folders(cfg, queue),
                           out=str(registry.staging()), report=str(report),
                           start=str(registry.champion_dir()) if registry.champion_dir() else None,
                           parent=registry.champion_version(), val_percent=rc.val_percent,
                           minutes=minutes if minutes is not None else rc.max_minutes, epochs=epochs,
                           threads=rc.threads, nice=rc.nice)
            log.info("retrain {}: training a challenger from version {} on {} pairs ({} new), at most {:g} min, "
                     "in a child process ({} thread(s), nice {}); report in {}", queue, job.parent,
                     counts["pairs"], counts["new"], job.minutes, job.threads, job.nice, report)
            result, error = self._run_child(job)
            outcome = conclude(cfg, queue, job, result, who=who, started=started, registry=registry, error=error)
            if outcome.decision in ("promoted", "rejected"):
                mark_trained(pairs_dir, cfg.queues[queue].task == "colorize", counts["new"])
            return outcome

    def _run_child(self, job: TrainJob) -> tuple[dict | None, str | None]:
        """Run the child to its end or its deadline; (result.json or None, why it failed or None)."""
        report = Path(job.report)
        job_path = job.save(report / "job.json")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # so `-m daemon.challenger` resolves from a checkout
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update({"PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())})
        if job.threads:  # before torch starts in the child, so its thread pools are small from the start
            env.update(OMP_NUM_THREADS=str(job.threads), MKL_NUM_THREADS=str(job.threads))
        deadline = time.monotonic() + 60 * job.minutes * 1.25 + 300  # scoring and start-up take time too
        with open(report / "train.log", "ab") as out:
            # Its own session: a Ctrl-C meant for the service reaches the child only through us.
            self.child = child = subprocess.Popen(
                [sys.executable, "-m", "daemon.challenger", str(job_path)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        (report / "child.pid").write_text(f"{child.pid}\n")
        termed = None
        try:
            while True:
                try:
                    rc = child.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if termed is None and now > deadline:
                    logger.warning("retrain {}: the training child ran past its deadline; stopping it", job.queue)
                    child.terminate()
                    termed = now
                elif termed is not None and now > termed + KILL_GRACE_S:
                    child.kill()
        finally:
            self.child = None
        result = _read_result(report / RESULT)
        if rc == 0 and result is not None:
            return result, None
        if self._stopping.is_set():
            return None, "interrupted: the service was stopping"
        if rc < 0:
            sig = signal.Signals(-rc).name
            hint = " (often the kernel's out-of-memory killer)" if rc == -signal.SIGKILL else ""
            why = f"the training child was killed by {sig}{hint}"
        elif result and "error" in result:
            why = result["error"]
        else:
            why = f"the training child exited with status {rc}"
        tail = _tail(report / "train.log")
        return None, why + (f"; the end of its log ({report / 'train.log'}):\n{tail}" if tail and rc != 65 else "")


def _read_result(path: Path) -> dict | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

