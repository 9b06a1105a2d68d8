"""The retraining job: fine-tune the champion in a child process; promote only a better model.

One run for one queue:
  1. skip (with a log line) when fewer than [retrain] min_new_pairs arrived since the last run;
  2. start `python -m daemon.learning.challenger` with [retrain] threads and nice, on the
     accumulated pairs plus the queue's base_pairs, for at most max_minutes (killed past a deadline);
  3. promotion.conclude(): promote the challenger only when the rule says it is better, else
     register it as rejected, with its scores;
  4. record the decision in the registry history and the run's report folder.
A child that crashes, is killed or finds a NaN changes nothing but the history: the
champion keeps serving. The sequence itself (the lock, staging, the report folder, the plan,
training, the decision, the pairs marked trained) is training_run(), which `reverser train` runs
too, training in the foreground instead of in a child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

from loguru import logger

from ..core.config import Config
from ..core.fs import file_lock, now_iso
from .challenger import PARENT_ENV, RESULT, TrainJob
from .counts import mark_trained, read_counts
from .promotion import TrainingOutcome, conclude
from .registry import Registry, open_registry
from .report import new_report_dir

KILL_GRACE_S = 120        # after SIGTERM at the deadline, how long the child may take to finish scoring
STOPPED = "interrupted: the service was stopping"   # why a run the service stopped failed


class Busy(Exception):
    """Another training run for the queue holds its lock."""


@contextmanager
def training_lock(registry_root: Path):
    """One training run per queue at a time, across processes (the service and `reverser train`)."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(registry_root / ".train.lock", blocking=False))
        except BlockingIOError:
            raise Busy(f"another training run for {registry_root.name!r} is in progress "
                       f"(the service's scheduled job, or a `reverser train`); try again when it ends") from None
        yield


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


def plan(cfg: Config, queue: str, *, out: Path, report: Path, start: Path | None, parent: int | None,
         **given) -> TrainJob:
    """The training job for queue, from [retrain] and the queue's pairs; given keys (TrainJob fields) win."""
    rc = cfg.retrain
    if "pairs" not in given:
        given["pairs"] = pair_folders(cfg, queue)
    job = TrainJob(queue=queue, task=cfg.queues[queue].task, pairs=(), out=str(out), report=str(report),
                   start=str(start) if start else None, parent=parent, val_percent=rc.val_percent,
                   minutes=rc.max_minutes, epochs=rc.max_epochs or None, threads=rc.threads, nice=rc.nice)
    return replace(job, **given)


def training_run(cfg: Config, queue: str, registry: Registry | None, *, who: str,
                 train: Callable[[TrainJob], tuple[dict | None, str | None]],
                 announce: Callable[[TrainJob, dict], None], stage: Path | None = None, out: Path | None = None,
                 mark: bool = True, force: bool = False, no_promote: bool = False, stopped: str | None = None,
                 **given) -> TrainingOutcome:
    """One training run, for the nightly job and `reverser train` alike: the queue's training lock, a clean
    staging folder (registry's; stage for a run that writes out instead), a report folder, the plan (given:
    TrainJob fields; without start, the champion now, under the lock), announce(job, the pairs' counts),
    train(job) -> (result.json's dict or None, why it failed or None), the decision (promotion.conclude;
    error == stopped: the service was stopping), and the pairs marked trained (mark) when a model was
    registered."""
    pairs_dir = cfg.state_dir("pairs", queue)
    counts = read_counts(pairs_dir)
    with training_lock(registry.root if registry is not None else cfg.state_dir("models", queue)):
        if registry is not None:
            registry.clean_staging()
            stage = registry.staging()
            if "start" not in given:   # the champion as it is now, under the lock: what the run fine-tunes
                given.update(start=registry.champion_dir(), parent=registry.champion_version())
        started = now_iso()
        report = new_report_dir(cfg.state_dir("reports", queue))
        job = plan(cfg, queue, out=stage, report=report, **given)
        announce(job, counts)
        result, error = train(job)
        outcome = conclude(cfg, queue, job, result, who=who, started=started, registry=registry, out=out,
                           force=force, no_promote=no_promote, error=error,
                           stopped=stopped is not None and error == stopped)
        if mark and outcome.decision in ("promoted", "rejected"):
            mark_trained(pairs_dir, cfg.queues[queue].task == "colorize", counts["new"])
        return outcome


class Retrainer:
    """The service's training runs: one at a time, each in a child process; stop() kills it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.child: subprocess.Popen | None = None   # the running training child, if any
        self._stopping = threading.Event()
        # Told each run's outcome (skipped, promoted, rejected, failed) as run() returns it: the service's metrics.
        self.on_outcome: Callable[[TrainingOutcome], None] | None = None

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
            epochs: int | None = None, who: str = "retrain (scheduled)") -> TrainingOutcome:
        """One run for one queue, training in a child process; see the module docstring. Its outcome is told
        to on_outcome too."""
        outcome = self._run(queue, check_new, minutes, epochs, who)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def _run(self, queue: str, check_new: bool, minutes: float | None, epochs: int | None,
             who: str) -> TrainingOutcome:
        cfg, rc = self.cfg, self.cfg.retrain
        log = logger.bind(queue=queue)
        counts = read_counts(cfg.state_dir("pairs", queue))
        if check_new and counts["new"] < rc.min_new_pairs:
            why = (f"{counts['new']} new pairs since the last training, fewer than min_new_pairs = "
                   f"{rc.min_new_pairs}")
            log.info("retrain {}: skipped: {}", queue, why)
            return TrainingOutcome(queue, "skipped", why)
        registry = open_registry(cfg, queue, who)

        def announce(job: TrainJob, counts: dict) -> None:
            log.info("retrain {}: training a challenger from version {} on {} pairs ({} new), at most {:g} min{}, "
                     "in a child process ({} thread(s), nice {}); report in {}", queue, job.parent,
                     counts["pairs"], counts["new"], job.minutes, f" or {job.epochs} epochs" if job.epochs else "",
                     job.threads, job.nice, job.report)

        return training_run(cfg, queue, registry, who=who, train=self._run_child, announce=announce, stopped=STOPPED,
                            **({"minutes": minutes} if minutes is not None else {}),
                            **({"epochs": epochs} if epochs is not None else {}))

    def _run_child(self, job: TrainJob) -> tuple[dict | None, str | None]:
        """Run the child to its end or its deadline; (result.json or None, why it failed or None)."""
        report = Path(job.report)
        job_path = job.save(report / "job.json")
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # so `-m daemon.learning.challenger` resolves from a checkout
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update({"PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())})
        if job.threads:  # before torch starts in the child, so its thread pools are small from the start
            env.update(OMP_NUM_THREADS=str(job.threads), MKL_NUM_THREADS=str(job.threads))
        deadline = time.monotonic() + 60 * job.minutes * 1.25 + 300  # scoring and start-up take time too
        with open(report / "train.log", "ab") as out:
            # Its own session: a Ctrl-C meant for the service reaches the child only through us.
            self.child = child = subprocess.Popen(
                [sys.executable, "-m", "daemon.learning.challenger", str(job_path)], stdin=subprocess.DEVNULL,
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
            return None, STOPPED
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

