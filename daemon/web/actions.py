"""What the pages and the API read and do beyond files: status, models, training; one place for both.

Promote and roll back are the registry's own promote() and rollback(), the
ones `reverser models` calls, with the same rules (a version that does not
load never serves; a rollback needs a parent). Train now is the nightly job's
own Retrainer.run() for one queue, in its training child process, without the
min_new_pairs check (a person asked for it).
"""

from __future__ import annotations

import json
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loguru import logger

from ..core.config import Config
from ..learning.counts import read_counts
from ..learning.registry import Registry, RegistryError, open_registry
from ..learning.retrain import Busy, Retrainer
from ..ops.status import STATUS_FILE, read_status
from .ondisk import Refused

RUN_NAME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(-\d+)?$")   # a report folder: report.new_report_dir()


def status(cfg: Config) -> dict:
    """<state>/status.json: what `reverser status --json` prints."""
    try:
        return read_status(cfg.paths.state)
    except (OSError, ValueError) as e:
        raise Refused(503, f"no status yet ({cfg.paths.state / STATUS_FILE}: {e}); the service writes it every "
                           f"{cfg.status.interval_seconds:g} s") from None


def _queue(cfg: Config, queue: str) -> None:
    if queue not in cfg.queues:
        raise Refused(404, f"no queue {queue!r}; queues: {', '.join(cfg.queues)}")


def _registry(cfg: Config, queue: str) -> Registry:
    """For reading: no import of the shipped model (the service did that at start-up)."""
    return Registry(cfg.state_dir("models", queue), cfg.retrain.keep_rejected)


def models(cfg: Config, queue: str) -> list[dict]:
    """The queue's versions, newest first, with their scores; the champion marked."""
    _queue(cfg, queue)
    reg = _registry(cfg, queue)
    champion = reg.champion_version()
    out = []
    for v in reversed(reg.versions()):
        m = v.meta
        scores = m.get("metrics") or {}
        paired = (m.get("rule") or {}).get("paired") or {}
        out.append({"version": v.number, "status": v.status, "champion": v.number == champion,
                    "registered": str(m.get("registered", m.get("created", "")))[:16].replace("T", " "),
                    "parent": m.get("parent"), "psnr": scores.get("psnr"),
                    "colorfulness": scores.get("colorfulness"), "auc": scores.get("auc"),
                    "champion_psnr": (m.get("champion_metrics") or {}).get("psnr"),
                    "gain_db": paired.get("mean_db"), "gain_lower_db": paired.get("lower_db"),
                    "why": m.get("why", ""),
                    "report": f"/models/{queue}/{v.number}/report.png" if version_report(cfg, queue, v.number) else None})
    return out


def promote(cfg: Config, queue: str, version: int, who: str) -> str:
    _queue(cfg, queue)
    reg = open_registry(cfg, queue, who)
    old = reg.champion_version()
    try:
        reg.promote(version, who, f"promoted from the web from version {old}")
    except RegistryError as e:
        raise Refused(409, str(e)) from None
    logger.info("{}: version {} promoted by {} (was {}); the service swaps it in between batches",
                queue, version, who, old)
    return f"{queue}: version {version} is the champion; the service swaps it in between batches"


def rollback(cfg: Config, queue: str, who: str) -> str:
    _queue(cfg, queue)
    reg = open_registry(cfg, queue, who)
    old = reg.champion_version()
    try:
        new = reg.rollback(who, f"rolled back from the web from version {old}")
    except RegistryError as e:
        raise Refused(409, str(e)) from None
    logger.info("{}: rolled back by {} from version {} to {}", queue, who, old, new)
    return f"{queue}: rolled back from version {old} to version {new}"


def _report_png(cfg: Config, folder: Path) -> Path | None:
    """folder/report.png when folder is a run's report folder under <state>/reports/ and it is a plain file."""
    reports = cfg.state_dir("reports").resolve()
    png = folder / "report.png"
    try:
        if reports not in folder.resolve().parents or not stat.S_ISREG(png.lstat().st_mode):
            return None
    except OSError:
        return None
    return png


def version_report(cfg: Config, queue: str, version: int) -> Path | None:
    """The report.png of the training run that made a version, from its meta.json."""
    try:
        report = _registry(cfg, queue).version(version).meta.get("report")
    except RegistryError:
        return None
    return _report_png(cfg, Path(report)) if report else None


def run_report(cfg: Config, queue: str, run: str) -> Path | None:
    if queue not in cfg.queues or not RUN_NAME.match(run):
        return None
    return _report_png(cfg, cfg.state_dir("reports", queue) / run)


def last_run(cfg: Config, queue: str) -> dict | None:
    """The newest finished run's decision, reason, time and report picture."""
    folder = cfg.state_dir("reports", queue)
    try:
        runs = sorted((p for p in folder.iterdir() if RUN_NAME.match(p.name)), reverse=True)
    except OSError:
        return None
    for run in runs:
        try:
            data = json.loads((run / "report.json").read_text())
        except (OSError, ValueError):
            continue
        return {"run": run.name, "decision": data.get("decision"), "why": data.get("why"),
                "finished": str(data.get("finished", ""))[:16].replace("T", " "), "version": data.get("version"),
                "report": f"/reports/{queue}/{run.name}/report.png" if _report_png(cfg, run) else None}
    return None


@dataclass
class TrainNow:
    """Start the nightly job's run for one queue now, in a thread of its own; one at a time."""

    retrainer: Retrainer
    next_run: Callable[[], object]           # the scheduler's next run time, or None

    def __post_init__(self):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.queue: str | None = None

    @property
    def busy(self) -> bool:
        child = self.retrainer.child
        return (self._thread is not None and self._thread.is_alive()) or (child is not None and child.poll() is None)

    def start(self, queue: str, who: str) -> str:
        with self._lock:
            if self.busy:
                raise Refused(409, "a training run is in progress; try again when it ends")
            self.queue = queue
            self._thread = threading.Thread(target=self._run, args=(queue, who), name="train-now", daemon=True)
            self._thread.start()
        return f"{queue}: training started (the nightly job's run, in its child process); the Training page " \
               f"shows its decision when it ends"

    def _run(self, queue: str, who: str) -> None:
        try:
            self.retrainer.run(queue, check_new=False, who=who)
        except Busy as e:
            logger.warning("train now {}: {}", queue, e)
        except Exception:
            logger.exception("train now {}: the run failed; the models in service are unchanged", queue)


def training(cfg: Config, doc: dict | None, train: TrainNow | None) -> dict:
    """The Training page: per queue the pairs (status, or counts.json), halves waiting, the last run; the next
    scheduled run and whether a run is going now. Keys status does not give are left out."""
    queues = {}
    for q in cfg.queues:
        s = ((doc or {}).get("queues") or {}).get(q) or {}
        pairs = s.get("pairs") or read_counts(cfg.state_dir("pairs", q))
        queues[q] = {"pairs": pairs.get("pairs", 0), "new": pairs.get("new", 0),
                     "halves": _count(s.get("halves_waiting")), "refused": _count(s.get("training_refused")),
                     "last": last_run(cfg, q)}
    nxt = train.next_run() if train else None
    return {"queues": queues, "enabled": cfg.retrain.enabled, "cron": cfg.retrain.cron,
            "next_run": nxt.strftime("%Y-%m-%d %H:%M %Z") if nxt else None,
            "running": bool(train and train.busy), "running_queue": train.queue if train and train.busy else None}


def _count(entry) -> int | None:
    """A status entry's count ({"count": N, "files": [...]}), None when this status has no such entry."""
    return entry.get("count") if isinstance(entry, dict) else None
