"""When retraining runs: an APScheduler cron job from [retrain] cron, in local time.

One instance at a time, coalesced. APScheduler keeps no memory across restarts
and, by default, silently skips a run more than a second late, so a night the
service was down would be lost. We persist when the job last ran
(<state>/reports/schedule.json) and at start-up compare it with the cron: if a
fire time fell between the last run and now, the job runs once, right away;
however many nights were missed, once. The clock is injectable so this can be
tested without waiting for 03:00.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from loguru import logger
from tzlocal import get_localzone

from ..core.config import Config
from ..core.fs import write_json

STATE_FILE = "schedule.json"


def missed_run(trigger: CronTrigger, last_run: datetime | None, now: datetime) -> datetime | None:
    """The first fire time after last_run if it is already past (a run was missed), else None."""
    if last_run is None:
        return None
    due = trigger.get_next_fire_time(None, last_run + timedelta(microseconds=1))
    return due if due is not None and due <= now else None


class RetrainScheduler:
    """Runs job() on the cron schedule, and once at start() when a run was missed."""

    def __init__(self, cfg: Config, job: Callable[[], object],
                 clock: Callable[[], datetime] | None = None, timezone=None):
        self.tz = timezone or get_localzone()
        self.clock = clock or (lambda: datetime.now(self.tz))
        self.cron = cfg.retrain.cron
        self.enabled = cfg.retrain.enabled
        self.trigger = CronTrigger.from_crontab(self.cron, timezone=self.tz)
        self.state_file = cfg.state_dir("reports") / STATE_FILE
        self.job = job
        self.runs = 0                     # completed runs since start(), for status and tests
        self.ran = threading.Event()      # set after each completed run
        self._scheduler: BackgroundScheduler | None = None

    def last_run(self) -> datetime | None:
        try:
            return datetime.fromisoformat(json.loads(self.state_file.read_text())["last_run"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, when: datetime) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.state_file, {"last_run": when.isoformat(), "cron": self.cron})

    def start(self) -> None:
        """Schedule the job; run it once now if a fire time passed while the service was down."""
        if not self.enabled:
            logger.info("retraining is off ([retrain] enabled = false)")
            return
        now = self.clock()
        last = self.last_run()
        catch_up = missed_run(self.trigger, last, now)
        if last is None:
            self._save(now)  # the first start: nothing was missed; count from here
        extra = {}
        if catch_up is not None:
            logger.info("retraining: the run due at {} was missed (last run {}); running it now, once",
                        catch_up.strftime("%Y-%m-%d %H:%M"), last.strftime("%Y-%m-%d %H:%M"))
            extra["next_run_time"] = now
        self._scheduler = BackgroundScheduler(timezone=self.tz)
        # misfire_grace_time=None: a late run (a busy or suspended machine) still runs, coalesced to once.
        self._scheduler.add_job(self._run, self.trigger, id="retrain", name="retrain", max_instances=1,
                                coalesce=True, misfire_grace_time=None, **extra)
        self._scheduler.start()
        if catch_up is None:
            logger.info("retraining scheduled: cron {!r}, next run {}", self.cron,
                        self.next_run().strftime("%Y-%m-%d %H:%M %Z"))

    def next_run(self) -> datetime | None:
        job = self._scheduler.get_job("retrain") if self._scheduler else None
        return job.next_run_time if job else None

    def shutdown(self) -> None:
        """Stop scheduling; a run in progress is not waited for (stop its child separately)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def _run(self) -> None:
        started = self.clock()
        completed = True
        try:
            # job() returns False when it was interrupted (the service is stopping).
            completed = self.job() is not False
        except Exception:
            logger.exception("retraining job failed; the models in service are unchanged")
        finally:
            # Recorded when the run ends, as the time it started: a run the service's stop
            # interrupted runs again at the next start, and a finished one is never repeated.
            if completed:
                self._save(started)
            self.runs += 1
            self.ran.set()
            if self._scheduler is not None and self.next_run() is not None:
                logger.info("retraining: next run {}", self.next_run().strftime("%Y-%m-%d %H:%M %Z"))
