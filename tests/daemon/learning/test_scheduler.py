"""The retraining schedule: a missed night runs once at the next start (a controlled clock), never twice."""

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from daemon.core.config import load_config
from daemon.learning.retrain import Retrainer
from daemon.learning.scheduler import RetrainScheduler, missed_run
from tests.support.config import write_config

TZ = timezone(timedelta(hours=1))      # a fixed local zone keeps the test independent of the machine's


def at(day, hour, minute=0):
    return datetime(2025, 3, day, hour, minute, tzinfo=TZ)


@pytest.fixture
def cfg(tmp_path, tiny_models):
    return load_config(write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                                    '[retrain]\nenabled = true\ncron = "0 3 * * *"\nmin_new_pairs = 5\n'))


def test_a_run_is_missed_only_when_a_fire_time_passed_since_the_last_run():
    nightly = CronTrigger.from_crontab("0 3 * * *", timezone=TZ)
    assert missed_run(nightly, at(1, 3), at(1, 23)) is None              # ran last night, not due again yet
    assert missed_run(nightly, at(1, 3), at(2, 2, 59)) is None
    assert missed_run(nightly, at(1, 3), at(2, 3, 30)) == at(2, 3)       # down over 03:00
    assert missed_run(nightly, at(1, 3), at(9, 12)) == at(2, 3)          # down a week: still one answer
    assert missed_run(nightly, None, at(9, 12)) is None                  # never ran: a first start


class Job:
    def __init__(self, result=None):
        self.calls, self.result = 0, result

    def __call__(self):
        self.calls += 1
        return self.result


def _start(cfg, clock_time, job):
    sched = RetrainScheduler(cfg, job, clock=lambda: clock_time, timezone=TZ)
    sched.start()
    return sched


def _last_run(cfg):
    return datetime.fromisoformat(json.loads((cfg.state_dir("reports") / "schedule.json").read_text())["last_run"])


def test_nights_missed_while_down_run_once_at_the_next_start(cfg):
    first = _start(cfg, at(1, 3, 0), Job())       # the service ran the night of the 1st...
    first._save(at(1, 3))
    first.shutdown()
    job = Job()
    sched = _start(cfg, at(5, 10), job)            # ...and starts again on the 5th: three nights missed
    try:
        assert sched.ran.wait(15), "the missed run did not start"
        time.sleep(0.5)                            # and nothing more follows
        assert job.calls == 1 and sched.runs == 1
        assert _last_run(cfg) == at(5, 10)
        # After the catch-up, the cron schedule goes on: the next run is a real 03:00.
        nxt = sched.next_run()
        assert (nxt.hour, nxt.minute) == (3, 0) and nxt > datetime.now(TZ)
    finally:
        sched.shutdown()


def test_no_run_at_start_when_none_was_missed(cfg):
    sched = _start(cfg, at(5, 10), Job())
    sched._save(at(5, 3, 0))                       # it ran this morning at 03:00
    sched.shutdown()
    job = Job()
    sched = _start(cfg, at(5, 23), job)
    try:
        assert not sched.ran.wait(1.5)
        assert job.calls == 0 and _last_run(cfg) == at(5, 3)
    finally:
        sched.shutdown()


def test_a_first_start_runs_nothing_and_counts_from_now(cfg):
    job = Job()
    sched = _start(cfg, at(5, 10), job)
    try:
        assert not sched.ran.wait(1.5) and job.calls == 0
        assert _last_run(cfg) == at(5, 10)
    finally:
        sched.shutdown()


def test_an_interrupted_run_is_not_counted_so_it_runs_again_at_the_next_start(cfg):
    sched = _start(cfg, at(1, 12), Job())
    sched.shutdown()
    sched = _start(cfg, at(2, 12), Job(result=False))    # missed 03:00 on the 2nd; the catch-up is interrupted
    assert sched.ran.wait(15)
    sched.shutdown()
    assert _last_run(cfg) == at(1, 12)
    job = Job()
    sched = _start(cfg, at(2, 13), job)
    try:
        assert sched.ran.wait(15) and job.calls == 1
    finally:
        sched.shutdown()


def test_disabled_retraining_schedules_nothing(tmp_path, tiny_models):
    cfg = load_config(write_config(tmp_path, {"colorize": tiny_models["colorize"]}))  # enabled = false
    sched = _start(cfg, at(5, 10), Job())
    assert sched.next_run() is None


def test_the_job_is_skipped_with_a_log_line_when_too_few_new_pairs_arrived(cfg):
    lines = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    try:
        assert Retrainer(cfg).run_due() is True
    finally:
        logger.remove(sink)
    assert any("skipped" in line and "fewer than min_new_pairs = 5" in line for line in lines)
    assert not cfg.state_dir("reports", "colorize").exists()     # no run, no report
    assert not cfg.state_dir("models", "colorize").exists()      # the registry is untouched


def test_one_instance_at_a_time(cfg):
    gate, calls = threading.Event(), []

    def slow():
        calls.append(1)
        gate.wait(10)

    sched = _start(cfg, at(1, 12), Job())
    sched.shutdown()
    sched = _start(cfg, at(3, 12), slow)              # catch-up starts and blocks
    try:
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        sched._scheduler.get_job("retrain").modify(next_run_time=datetime.now(TZ))  # fire again meanwhile
        time.sleep(1.5)
        assert len(calls) == 1
    finally:
        gate.set()
        sched.shutdown()
