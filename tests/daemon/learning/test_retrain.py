"""The retraining job with real child processes and a real registry: promote, reject, survive a kill."""

import json
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from functools import partial

import pytest
from PIL import Image

from daemon.core.config import load_config
from daemon.learning.counts import read_counts
from daemon.learning.intake import PairIntake
from daemon.learning.promotion import decide
from daemon.learning.registry import Registry, open_registry
from daemon.learning.retrain import Retrainer
from daemon.learning.serving import model_dir
from tests.support.config import write_config
from tests.support.pairs import scene, tiny_champion, write_pairs
from unet import Predictor
from unet.metrics import colorfulness
from unet.scores import Scores

EPOCHS = 20   # a few seconds of one CPU thread; enough for the rule in synthetic_pairs (the minutes, 60, never
#              cut a run short: a slow machine trains as far, only later)


@pytest.fixture
def cfg(tmp_path):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    return load_config(write_config(tmp_path, {"colorize": shipped},
                                    "[retrain]\nmin_new_pairs = 20\nthreads = 1\nnice = 5\nmax_minutes = 60\nmin_holdout_pairs = 5\n"))


def _drop_pairs(cfg, n=40, scramble=False):
    """Pairs dropped into the train inbox and taken in by the intake, as in the running service."""
    write_pairs(cfg.train_inbox("colorize"), n, scramble=scramble)
    PairIntake(cfg, "colorize").scan()
    assert read_counts(cfg.state_dir("pairs", "colorize"))["new"] == n


def _colorizes(cfg) -> float:
    """Colorfulness of what the serving model makes of a gray picture."""
    gray = Image.fromarray(scene(999).astype("uint8"), "L")
    return colorfulness(Predictor(model_dir(cfg, "colorize"), device="cpu").predict([gray])[0])


@contextmanager
def serving(cfg):
    """A real conversion pipeline on the queue's champion, with the service's champion watch beside it."""
    from daemon.conversion.hotswap import ChampionWatch
    from daemon.conversion.converting.pipeline import Pipeline, PipelineSettings

    open_registry(cfg, "colorize")   # as the service does at start: the shipped model is version 1
    pipe = Pipeline({"colorize": Predictor(model_dir(cfg, "colorize"), device="cpu")}, {"colorize": 1},
                    PipelineSettings.from_config(cfg))
    watch = ChampionWatch(pipe, ["colorize"], partial(model_dir, cfg), lambda q, f: Predictor(f, device="cpu"))
    try:
        yield pipe, watch
    finally:
        pipe.close(time.monotonic() + 5)


def _report(outcome) -> dict:
    return json.loads((outcome.report / "report.json").read_text())


def test_a_challenger_trained_on_good_pairs_is_promoted_and_serves(cfg):
    _drop_pairs(cfg)
    before = _colorizes(cfg)
    with serving(cfg) as (pipe, watch):
        outcome = Retrainer(cfg).run("colorize", epochs=EPOCHS)
        assert watch.check("colorize"), "the service's champion watch swaps the new champion in"
        assert pipe.predictor("colorize").version == 2

    assert outcome.decision == "promoted", outcome.why
    reg = Registry(cfg.state_dir("models", "colorize"))
    assert reg.champion_version() == 2 and model_dir(cfg, "colorize") == reg.root / "v0002"
    meta = reg.version(2).meta
    assert meta["parent"] == 1 and meta["pairs"] == 40 and meta["status"] == "champion"
    assert meta["metrics"]["psnr"] > meta["champion_metrics"]["psnr"] + cfg.retrain.margin
    # What the service sets reverser_last_training_psnr_gain_db to.
    assert outcome.psnr_gain_db == pytest.approx(meta["metrics"]["psnr"] - meta["champion_metrics"]["psnr"])
    assert meta["data_fingerprint"] and meta["code_version"] and meta["started"] and meta["finished"]
    assert reg.version(1).status == "retired"
    assert reg.history()[-1]["action"] == "promote" and reg.history()[-1]["who"] == "retrain (scheduled)"
    assert _colorizes(cfg) > before + 10, "the new champion colors a gray picture; the untrained one did not"

    report = _report(outcome)
    assert report["decision"] == "promoted" and report["val_pairs"] >= 1 and len(report["history"]) >= 2
    png = Image.open(outcome.report / "report.png")
    assert png.width >= 700 and png.height >= 600           # curves plus a contact sheet of held-out pairs
    assert read_counts(cfg.state_dir("pairs", "colorize"))["new"] == 0
    log = (outcome.report / "train.log").read_text()
    assert "training colorize" in log  # the child's own log
    # The champion is compared after calibrating its decoding on the same pairs; as served is kept too.
    assert "champion calibrated like the challenger" in log and meta["champion_served_metrics"]["psnr"] > 0


def test_a_challenger_trained_on_scrambled_pairs_is_rejected_and_the_champion_keeps_serving(cfg):
    _drop_pairs(cfg, scramble=True)
    with serving(cfg) as (pipe, watch):
        outcome = Retrainer(cfg).run("colorize", epochs=EPOCHS)
        assert not watch.check("colorize") and pipe.predictor("colorize").version == 1

    assert outcome.decision == "rejected", outcome.why
    reg = Registry(cfg.state_dir("models", "colorize"))
    assert reg.champion_version() == 1 and model_dir(cfg, "colorize") == reg.root / "v0001"
    rejected = reg.version(2)
    assert rejected.status == "rejected" and rejected.meta["why"] == outcome.why
    assert math.isfinite(rejected.meta["metrics"]["psnr"]) and rejected.meta["champion_metrics"]
    assert reg.history()[-1]["action"] == "reject" and reg.history()[-1]["to"] == 1
    assert _report(outcome)["decision"] == "rejected" and (outcome.report / "report.png").exists()


def _start_and_wait_for_training(retrainer, cfg, target):
    """Run target in a thread; return (thread, result dict, child) once the child is training."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=target()))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        child = retrainer.child
        logs = list(cfg.state_dir("reports", "colorize").glob("*/train.log"))
        if child and logs and "training colorize on" in logs[0].read_text():
            return worker, result, child
        time.sleep(0.1)
    raise AssertionError("the training child never started training")


def test_a_training_child_killed_mid_run_leaves_the_champion_serving_and_a_record(cfg):
    _drop_pairs(cfg)
    retrainer = Retrainer(cfg)
    worker, result, child = _start_and_wait_for_training(retrainer, cfg, lambda: retrainer.run("colorize", minutes=1))
    os.kill(child.pid, signal.SIGKILL)       # what the out-of-memory killer does
    worker.join(30)

    outcome = result["out"]
    assert outcome.decision == "failed" and "SIGKILL" in outcome.why
    reg = Registry(cfg.state_dir("models", "colorize"))
    assert reg.champion_version() == 1 and [v.number for v in reg.versions()] == [1]
    assert not list(reg.root.glob(".staging-*")), "the half-trained challenger is cleaned away"
    entry = reg.history()[-1]
    assert entry["action"] == "failed" and "SIGKILL" in entry["why"] and entry["to"] == 1
    assert _report(outcome)["decision"] == "failed"
    assert read_counts(cfg.state_dir("pairs", "colorize"))["new"] == 40, "the pairs stay new for the next run"
    assert _colorizes(cfg) >= 0  # and the champion still loads and converts


def test_stopping_the_service_stops_the_child_and_the_night_is_not_counted(cfg):
    _drop_pairs(cfg)
    retrainer = Retrainer(cfg)
    worker, result, child = _start_and_wait_for_training(retrainer, cfg, retrainer.run_due)
    retrainer.stop()
    worker.join(30)
    assert result["out"] is False, "run_due tells the scheduler the night did not complete"
    assert child.poll() is not None
    entry = Registry(cfg.state_dir("models", "colorize")).history()[-1]
    assert entry["action"] == "failed" and "stopping" in entry["why"]


def test_too_few_pairs_fail_with_a_message_that_says_what_to_do(cfg):
    write_pairs(cfg.state_dir("pairs", "colorize"), 2)
    outcome = Retrainer(cfg).run("colorize", check_new=False, epochs=1)
    assert outcome.decision == "failed" and "too few" in outcome.why and "add pairs" in outcome.why
    assert Registry(cfg.state_dir("models", "colorize")).champion_version() == 1


S = Scores.from_dict   # the scores as result.json holds them, read back typed
CHAMP = {"psnr": 22.0, "colorfulness": 20.0, "gray_psnr": 20.0, "tint_psnr": 20.5}


@pytest.mark.parametrize("challenger, promoted, words", [
    ({"psnr": 22.5, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}, True, "22.00 -> 22.50"),
    ({"psnr": 22.01, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}, False, "short of the margin"),
    ({"psnr": 22.5, "colorfulness": 15.0, "gray_psnr": 20.0, "tint_psnr": 20.5}, False, "less colorful"),
    ({"psnr": 22.5, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 22.6}, False, "mean-tint baseline"),
    ({"psnr": float("nan"), "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}, False, "not a number"),
])
def test_the_promotion_rule(challenger, promoted, words):
    ok, why = decide("colorize", S(challenger), S(CHAMP), margin=0.05)
    assert ok is promoted and words in why


def test_the_rule_refuses_worse_hues_beyond_the_noise_and_reads_models_without_the_score():
    champion = {**CHAMP, "auc": 74.0}
    better = {"psnr": 22.5, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}
    ok, why = decide("colorize", S({**better, "auc": 72.9}), S(champion), margin=0.05)
    assert not ok and "hues are worse (ab AuC 72.9 against the champion's 74.0)" in why
    ok, why = decide("colorize", S({**better, "auc": 73.7}), S(champion), margin=0.05)   # within the noise
    assert ok and "ab AuC 74.0 -> 73.7" in why
    assert decide("colorize", S({**better, "auc": 70.0}), S(CHAMP), margin=0.05)[0]   # a champion scored before AuC


def test_force_and_no_promote_override_the_rule_and_say_so():
    worse = {"psnr": 21.0, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}
    better = {"psnr": 23.0, "colorfulness": 21.0, "gray_psnr": 20.0, "tint_psnr": 20.5}
    ok, why = decide("colorize", S(worse), S(CHAMP), 0.05, force=True)
    assert ok and "forced" in why and "short of the margin" in why
    ok, why = decide("colorize", S(better), S(CHAMP), 0.05, no_promote=True)
    assert not ok and "--no-promote" in why


def test_a_champion_chosen_by_hand_during_training_is_not_overruled(cfg, tmp_path):
    import shutil

    from daemon.learning.challenger import TrainJob
    from daemon.learning.registry import open_registry
    from daemon.learning.report import new_report_dir
    from daemon.learning.promotion import conclude

    reg = open_registry(cfg, "colorize")
    shutil.copytree(reg.root / "v0001", stage := reg.staging(), dirs_exist_ok=True)
    reg.add(stage, promote=False, who="t", why="kept aside", parent=1)          # version 2
    shutil.copytree(reg.root / "v0001", stage := reg.staging(), dirs_exist_ok=True)
    job = TrainJob(queue="colorize", task="colorize", pairs=(), out=str(stage), parent=1,
                   report=str(new_report_dir(cfg.state_dir("reports", "colorize"))))
    reg.promote(2, "someone", "by hand")                                         # while version 3 trained
    better = {"psnr": 25.0, "colorfulness": 30.0, "truth_colorfulness": 40.0, "gray_psnr": 20.0, "tint_psnr": 20.5,
              "pairs": 12, "psnr_each": [25.0 + 0.1 * (i % 3) for i in range(12)]}
    worse = {**better, "psnr": 21.0, "psnr_each": [21.0] * 12}
    outcome = conclude(cfg, "colorize", job, {"metrics": better, "champion_metrics": worse}, who="t",
                       started="", registry=reg)
    assert outcome.decision == "rejected" and "changed from version 1 to 2" in outcome.why
    assert reg.champion_version() == 2


def _wait(what, seconds, check):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def test_the_running_service_retrains_after_a_missed_night_and_serves_the_new_champion(tmp_path, service_env):
    import subprocess

    from daemon.core.fs import write_json
    from tests.support.processes import PYTHON

    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped},
                          "[retrain]\nenabled = true\nmin_new_pairs = 20\nthreads = 1\nmax_minutes = 60\nmax_epochs = 40\n"
                          "min_holdout_pairs = 5\n")
    cfg = load_config(config)
    _drop_pairs(cfg)
    # A budget of epochs, not minutes: a slow or busy machine trains as much as a quick one, only later.
    # The service last ran the job long ago: a night was missed, so it trains once, right at start.
    write_json(cfg.state_dir("reports") / "schedule.json", {"last_run": "2020-01-01T03:00:00+00:00"})
    log = open(tmp_path / "service.log", "w")
    service = subprocess.Popen([PYTHON, "-m", "daemon", "run", "--config", str(config)], env=service_env,
                               stdout=log, stderr=subprocess.STDOUT)
    status = cfg.paths.state / "status.json"

    def serving_version():
        try:
            return json.loads(status.read_text())["queues"]["colorize"]["model"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    try:
        reg = Registry(cfg.state_dir("models", "colorize"))
        # The run's end, whatever it decided (a slow machine takes longer, never less far).
        _wait("the catch-up run to end", 1800, lambda: reg.champion_version() == 2 or
              "retraining: next run" in (tmp_path / "service.log").read_text())
        assert reg.champion_version() == 2, (tmp_path / "service.log").read_text()[-3000:]
        _wait("the service to swap version 2 in", 30, lambda: serving_version() == 2)
        gray = Image.fromarray(scene(999).astype("uint8"), "L")
        gray.save(cfg.inbox("colorize") / "new_before.png")
        out = cfg.outbox("colorize") / "new_after.png"
        _wait("the conversion", 30, out.exists)
        assert colorfulness(Image.open(out)) > 10, "converted by the retrained champion, in color"
        assert service.poll() is None, "the service ran on throughout"
    finally:
        service.terminate()
        service.wait(60)
        log.close()
    assert service.returncode == 0
    text = (tmp_path / "service.log").read_text()
    assert "was missed" in text and "version 2 promoted" in text


def test_a_sigterm_during_a_nightly_run_is_a_normal_stop_not_an_error(tmp_path, service_env):
    """systemctl restart during a run: the run is recorded as failed, but nothing at ERROR reaches the log
    (journalctl -p err shows no fault)."""
    from tests.support.service import Service, wait_for

    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped},
                          "[retrain]\nenabled = true\nmin_new_pairs = 20\nthreads = 1\nmax_minutes = 5\n"
                          "min_holdout_pairs = 5\n")
    cfg = load_config(config)
    _drop_pairs(cfg)
    from daemon.core.fs import write_json
    write_json(cfg.state_dir("reports") / "schedule.json", {"last_run": "2020-01-01T03:00:00+00:00"})
    service = Service(config, service_env, tmp_path / "service.log")
    try:
        service.wait_log("training a challenger", 150)
        logs = cfg.state_dir("reports", "colorize")
        wait_for(lambda: any("training colorize on" in p.read_text() for p in logs.glob("*/train.log")), 120,
                 "the child to train", log=service.log)
        service.send(signal.SIGTERM)
        assert service.wait_exit(90) == 0
    finally:
        service.stop()
    text = service.log()
    assert "training stopped with the service" in text
    assert [line for line in text.splitlines() if " ERROR " in line] == []
    entry = Registry(cfg.state_dir("models", "colorize")).history()[-1]
    assert entry["action"] == "failed" and "stopping" in entry["why"]


def test_each_runs_outcome_is_told_to_the_outcome_hook_even_a_skipped_one(cfg):
    retrainer, told = Retrainer(cfg), []
    retrainer.on_outcome = told.append            # the service's metrics listen here
    _drop_pairs(cfg, n=10)                         # fewer than min_new_pairs = 20
    outcome = retrainer.run("colorize")
    assert outcome.decision == "skipped" and told == [outcome] and "min_new_pairs" in outcome.why
