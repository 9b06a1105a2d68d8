"""`reverser run` end to end: a real child process, the real observer on real folders, real signals."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from daemon.conversion.claims.owners import Owner
from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.processes import child_env
from tests.support.service import Service, names, services, wait_for
from unet import TaskConfig, UNetConfig, new_model, save_model

QUICK = '[watch]\nsettle_seconds = 0.3\nrescan_seconds = 2\n[status]\ninterval_seconds = 0.5\n'


@pytest.fixture(scope="module")
def env():
    """As the service_env fixture, for module-scoped services."""
    return child_env()


def _model_at(folder: Path, work_long: int) -> Path:
    torch.manual_seed(0)
    task = TaskConfig("colorize", work_long=work_long, bins_per_axis=8)
    return save_model(new_model(task, UNetConfig(widths=(8, 16, 32), middle_blocks=1)), folder, version=1)


@pytest.fixture(scope="module")
def medium_model(tmp_path_factory) -> Path:
    """A tiny network at a larger working size: batches take a noticeable time."""
    return _model_at(tmp_path_factory.mktemp("medium") / "colorize", 192)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    """A tiny network at a large working size: a forward pass lasts seconds, time to send a second signal."""
    return _model_at(tmp_path_factory.mktemp("slow") / "colorize", 512)


def drop_many(inbox: Path, n: int, size=(64, 48), prefix="f") -> list[str]:
    """n small PNG befores written straight into the inbox, as fast as possible."""
    src = make_image(inbox.parent / "src.png", size, "L").read_bytes()
    inbox.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        name = f"{prefix}{i:03d}_before.png"
        (inbox / name).write_bytes(src)
        out.append(name)
    return out


def after(names_before):
    return sorted(n.replace("_before", "_after") for n in names_before)


# -- one service, many drop-in behaviours --------------------------------------------------------

@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_models, env):
    """A running service that takes files only by event (settle 30 s), logging JSON lines."""
    root = tmp_path_factory.mktemp("svc")
    cfg = write_config(root, tiny_models, '[watch]\nsettle_seconds = 30\nrescan_seconds = 1\n'
                                          '[limits]\nmax_pixels = 1000000\nmax_file_mb = 1\n'
                                          '[status]\ninterval_seconds = 0.5\n')
    s = Service(cfg, env, root / "service.log", "--log-json").wait_ready()
    s.cfg = load_config(cfg)
    yield s
    assert s.stop() == 0


def outbox(s, q="colorize"):
    return s.cfg.outbox(q)


def wait_output(s, name, q="colorize", timeout=30):
    return wait_for(lambda: (outbox(s, q) / name).exists(), timeout, f"{name} in the outbox", log=s.log)


def test_a_slow_chunked_writer_is_never_taken_while_partial(svc):
    src = make_image(svc.cfg.paths.inbox.parent / "slow.png", (180, 120), "L", seed=5).read_bytes()
    path = svc.cfg.inbox("colorize") / "slow_before.png"
    with open(path, "wb") as f:
        for i in range(0, len(src), len(src) // 4 + 1):
            f.write(src[i:i + len(src) // 4 + 1])
            f.flush()
            time.sleep(0.5)  # longer than a short settle time would be
            assert path.exists(), "taken while the writer still had it open"
    wait_output(svc, "slow_after.png")
    assert (svc.cfg.state_dir("done", "colorize") / "slow_before.png").read_bytes() == src
    assert "slow_before.png" not in names(svc.cfg.failed("colorize"))
    with Image.open(outbox(svc) / "slow_after.png") as im:
        assert im.size == (180, 120)


def test_a_file_renamed_into_the_inbox_is_taken_at_once(svc):
    stage = svc.cfg.paths.inbox.parent / "stage"
    make_image(stage / "moved_before.jpg", (90, 60), "L")
    os.rename(stage / "moved_before.jpg", svc.cfg.inbox("reverse") / "moved_before.jpg")
    wait_output(svc, "moved_after.jpg", "reverse", timeout=20)  # well before the 30 s settle time


def test_a_bad_file_among_good_ones_fails_alone(svc):
    inbox = svc.cfg.inbox("colorize")
    good = drop_many(inbox, 6, prefix="good")
    (inbox / "bad_before.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    for name in after(good):
        wait_output(svc, name)
    failed = svc.cfg.failed("colorize")
    wait_for(lambda: "bad_before.jpg.reason.txt" in names(failed), 20, "the reason file", log=svc.log)
    reason = (failed / "bad_before.jpg.reason.txt").read_text()
    assert "cannot decode image" in reason and "what to do" in reason
    assert (failed / "bad_before.jpg").read_bytes().startswith(b"\xff\xd8")
    assert not [n for n in names(failed) if n.startswith("good")]
    # Its line names the folder as the config does, relative to the config's own folder.
    wait_for(lambda: "bad_before.jpg" in svc.log() and "moved to outbox/colorize/failed with" in svc.log(), 20,
             "the failure's line", log=svc.log)


def test_names_the_service_does_not_take_are_left_alone_and_logged_once(svc):
    inbox = svc.cfg.inbox("colorize")
    left = ["notes.txt", "photo.jpg", "x_before.jpg.part", ".hidden_before.jpg", "y_before.jpg.crdownload"]
    for n in left:
        (inbox / n).write_bytes(b"not for us")
    time.sleep(2.5)  # two reconcile scans
    assert all((inbox / n).exists() for n in left)
    lines = [json.loads(line) for line in svc.log().splitlines() if line.startswith("{")]
    notes = [e for e in lines if "notes.txt" in e["message"]]
    assert len(notes) == 1 and "left alone" in notes[0]["message"]
    assert not [e for e in lines if ".part" in e["message"] or ".hidden" in e["message"]]


def test_odd_names_and_hostile_entries_never_stop_the_service(svc, tmp_path):
    inbox, failed = svc.cfg.inbox("colorize"), svc.cfg.failed("colorize")
    odd = ["with space_before.png", "ünïcødé 写真_before.png", "new\nline_before.png"]
    for n in odd:
        make_image(inbox / n, (70, 50), "L")
    secret = tmp_path / "secret.png"
    make_image(secret, (70, 50), "L")
    os.symlink(secret, inbox / "link_before.png")
    os.mkfifo(inbox / "fifo_before.png")
    (inbox / "folder_before.png").mkdir()
    Image.new("1", (2000, 2000)).save(inbox / "bomb_before.png")          # 4 MP: over max_pixels
    (inbox / "huge_before.jpg").write_bytes(os.urandom(1_200_000))        # over max_file_mb
    for n in odd:
        wait_output(svc, n.replace("_before", "_after"))
    for n in ("link_before.png", "fifo_before.png", "bomb_before.png", "huge_before.jpg"):
        wait_for(lambda: n + ".reason.txt" in names(failed), 20, f"{n} quarantined", log=svc.log)
    assert "symbolic link" in (failed / "link_before.png.reason.txt").read_text()
    assert os.path.islink(failed / "link_before.png") and secret.exists()  # the link moved, not its target
    assert "megapixels" in (failed / "bomb_before.png.reason.txt").read_text()
    assert "max_file_mb" in (failed / "huge_before.jpg.reason.txt").read_text()
    assert (inbox / "folder_before.png").is_dir()
    make_image(inbox / "still_before.png", (70, 50), "L")
    wait_output(svc, "still_after.png")
    assert svc.proc.poll() is None


def test_log_lines_are_json_with_queue_file_and_timing(svc):
    make_image(svc.cfg.inbox("colorize") / "logged_before.png", (70, 50), "L")
    wait_output(svc, "logged_after.png")
    entries = [json.loads(line) for line in svc.log().splitlines()]  # every line must parse
    done = [e for e in entries if e.get("file") == "logged_before.png"]
    wait_for(lambda: done, 5, "the per-file line")
    assert done[0]["queue"] == "colorize" and done[0]["output"] == "logged_after.png" and done[0]["ms"] >= 0
    assert any(e["message"].startswith("batch: ") for e in entries)
    start = next(e["message"] for e in entries if e["message"].startswith("queue colorize"))
    assert "batch size 4 (configured)" in start and "model version 1" in start


def test_status_reports_the_running_service(svc, env):
    import subprocess

    from tests.support.processes import PYTHON

    make_image(svc.cfg.inbox("reverse") / "counted_before.png", (70, 50), "RGB")
    (svc.cfg.inbox("reverse") / "uncounted_before.png").write_bytes(b"not an image")
    wait_output(svc, "counted_after.png", "reverse")
    status = svc.cfg.paths.state / "status.json"
    wait_for(lambda: json.loads(status.read_text())["queues"]["reverse"]["failed"] >= 1, 20, "the failure counted",
             log=svc.log)
    r = subprocess.run([PYTHON, "-m", "daemon", "status", "--config", str(svc.config), "--json"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pid"] == svc.proc.pid and doc["state"] == "running" and doc["device"] == "cpu"
    assert doc["queues"]["reverse"]["processed"] >= 1 and doc["queues"]["reverse"]["failed"] >= 1
    assert doc["queues"]["colorize"]["model"]["version"] == 1 and doc["queues"]["colorize"]["max_batch"] == 4


# -- whole-service behaviours, each with its own service --------------------------------------------

def test_500_files_at_once_are_each_converted_exactly_once(tmp_path, tiny_models, env):
    cfg_path = write_config(tmp_path, {"colorize": tiny_models["colorize"]}, QUICK)
    cfg = load_config(cfg_path)
    with services() as running:
        s = Service(cfg_path, env, tmp_path / "service.log").wait_ready()
        running.append(s)
        dropped = drop_many(cfg.inbox("colorize"), 500)
        wait_for(lambda: len(names(cfg.state_dir("done", "colorize"))) >= 500, 240, "500 inputs done", log=s.log)
        status = cfg.paths.state / "status.json"
        wait_for(lambda: json.loads(status.read_text())["queues"]["colorize"]["processed"] >= 500, 10,
                 "status.json to count 500", log=s.log)
        assert s.stop() == 0
    assert names(cfg.outbox("colorize")) == after(dropped)   # exactly one result each, no NAME_after-1
    assert names(cfg.state_dir("done", "colorize")) == sorted(dropped)
    assert names(cfg.inbox("colorize")) == [] and names(cfg.state_dir("work", "colorize")) == []
    assert not cfg.failed("colorize").exists()
    assert json.loads(status.read_text())["queues"]["colorize"]["processed"] == 500


def test_restart_takes_back_work_left_by_a_crash_and_files_dropped_while_down(tmp_path, tiny_models, env):
    cfg_path = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                            QUICK.replace("[watch]", '[watch]\nobserver = "polling"\npoll_seconds = 0.2'))
    cfg = load_config(cfg_path)
    work = cfg.state_dir("work", "colorize")
    work.mkdir(parents=True)
    make_image(work / "4242xdead00-0@crashed_before.png", (64, 48), "L")   # its service died mid-batch
    alive = Owner(cfg.state_dir("work"))                                   # another service, still running
    make_image(work / f"{alive.ticket()}@theirs_before.png", (64, 48), "L")
    make_image(cfg.inbox("colorize") / "waiting_before.png", (64, 48), "L")
    try:
        with services() as running:
            s = Service(cfg_path, env, tmp_path / "service.log").wait_ready()
            running.append(s)
            wait_for(lambda: len(names(cfg.outbox("colorize"))) >= 2, 60, "two results", log=s.log)
            time.sleep(0.5)  # time enough to (wrongly) take the live service's file too
            assert s.stop() == 0
        assert names(cfg.outbox("colorize")) == ["crashed_after.png", "waiting_after.png"]
        assert names(cfg.state_dir("done", "colorize")) == ["crashed_before.png", "waiting_before.png"]
        assert [n.split("@")[1] for n in names(work)] == ["theirs_before.png"]   # a live owner's file is left
        assert "recovering 1 file(s) left in work/" in s.log()
    finally:
        alive.close()


def test_sigterm_during_a_batch_drains_exits_0_and_loses_nothing(tmp_path, slow_model, env):
    # Forward passes of seconds: when the first results appear the next batch has just begun,
    # so the SIGTERM sent then lands inside it.
    cfg_path = write_config(tmp_path, {"colorize": slow_model},
                            QUICK + "[runtime]\nmax_batch = 4\nmax_delay_ms = 100\ndrain_seconds = 60\n")
    cfg = load_config(cfg_path)
    dirs = {k: d for k, d in (("inbox", cfg.inbox("colorize")), ("work", cfg.state_dir("work", "colorize")),
                              ("done", cfg.state_dir("done", "colorize")))}
    with services() as running:
        s = Service(cfg_path, env, tmp_path / "first.log").wait_ready()
        running.append(s)
        dropped = drop_many(cfg.inbox("colorize"), 16)
        wait_for(lambda: names(cfg.outbox("colorize")), 60, "the first results", log=s.log)
        s.send(signal.SIGTERM)
        assert s.wait_exit(60) == 0
        log = s.log()
        assert "stopping" in log and "Stopped:" in log
        stop_at = log.index("SIGTERM: stopping")
        assert "batch: " in log[stop_at:], "the batch in flight at SIGTERM should have finished"
        outputs = names(cfg.outbox("colorize"))
        assert not [n for n in outputs if n.startswith(".")], "no half-written output"
        assert len(outputs) == len(names(dirs["done"])) < 16, "results match the inputs done, and some were left"
        placed = sorted(n.split("@")[-1] for d in dirs.values() for n in names(d))
        assert placed == sorted(dropped), "every input is in exactly one of inbox, work, done"
        # The next start finishes the rest, each exactly once.
        s2 = Service(cfg_path, env, tmp_path / "second.log").wait_ready()
        running.append(s2)
        wait_for(lambda: len(names(dirs["done"])) >= 16, 120, "all 16 done", log=s2.log)
        assert s2.stop() == 0
    assert names(cfg.outbox("colorize")) == after(dropped)
    assert names(dirs["work"]) == [] and names(dirs["inbox"]) == []


def test_a_second_signal_exits_at_once_and_loses_nothing(tmp_path, slow_model, env):
    cfg_path = write_config(tmp_path, {"colorize": slow_model},
                            QUICK + "[runtime]\nmax_batch = 4\ndrain_seconds = 600\n")
    cfg = load_config(cfg_path)
    with services() as running:
        s = Service(cfg_path, env, tmp_path / "service.log").wait_ready()
        running.append(s)
        dropped = drop_many(cfg.inbox("colorize"), 24)
        wait_for(lambda: names(cfg.outbox("colorize")), 60, "the first results", log=s.log)
        s.send(signal.SIGINT)
        s.wait_log("SIGINT: stopping")  # (two signals sent at once can arrive as one)
        s.send(signal.SIGINT)
        assert s.wait_exit(30) == 128 + signal.SIGINT
    assert "SIGINT again: exiting now" in s.log()
    dirs = (cfg.inbox("colorize"), cfg.state_dir("work", "colorize"), cfg.state_dir("done", "colorize"))
    assert sorted(n.split("@")[-1] for d in dirs for n in names(d)) == sorted(dropped)


def test_two_services_on_one_inbox_never_convert_a_file_twice(tmp_path, tiny_models, env):
    # The same config twice: one inbox, one outbox, one state folder; small in-flight caps make them share.
    cfg_path = write_config(tmp_path, {"colorize": tiny_models["colorize"]}, QUICK + "[runtime]\nqueue_size = 4\n")
    cfg = load_config(cfg_path)
    with services() as running:
        a = Service(cfg_path, env, tmp_path / "a.log")
        b = Service(cfg_path, env, tmp_path / "b.log")
        running += [a, b]
        a.wait_ready(), b.wait_ready()
        dropped = drop_many(cfg.inbox("colorize"), 80)
        wait_for(lambda: len(names(cfg.state_dir("done", "colorize"))) >= 80, 180, "80 inputs done", log=a.log)
        assert a.stop() == 0 and b.stop() == 0
    assert names(cfg.outbox("colorize")) == after(dropped)     # no NAME_after-1: nothing converted twice
    assert names(cfg.state_dir("done", "colorize")) == sorted(dropped)
    by_a, by_b = (s.log().count("_after.png in ") for s in (a, b))
    assert by_a + by_b == 80 and by_a > 0 and by_b > 0, (by_a, by_b)


def test_sighup_reloads_the_config_and_keeps_the_running_one_when_the_new_one_is_broken(tmp_path, tiny_models,
                                                                                      env):
    cfg_path = write_config(tmp_path, {"colorize": tiny_models["colorize"]}, QUICK)
    cfg = load_config(cfg_path)
    good = cfg_path.read_text()
    with services() as running:
        s = Service(cfg_path, env, tmp_path / "service.log").wait_ready()
        running.append(s)
        cfg_path.write_text(good.replace("[watch]", '[output]\nformat = "png"\n[watch]'))
        s.send(signal.SIGHUP)
        s.wait_log("Reloaded")
        make_image(cfg.inbox("colorize") / "one_before.jpg", (64, 48), "L")
        wait_for(lambda: names(cfg.outbox("colorize")) == ["one_after.png"], 30, "a PNG result", log=s.log)
        # Models that cannot load (on a device that is not there), then a typo: both refused,
        # and the PNG setting stays in force.
        cfg_path.write_text(good.replace("[watch]", '[output]\nformat = "png"\n[watch]')
                            .replace('device = "cpu"', 'device = "cuda:99"'))
        s.send(signal.SIGHUP)
        s.wait_log("Reload refused")
        cfg_path.write_text(good.replace("[watch]", "[watch]\nsettle_secs = 1"))
        s.send(signal.SIGHUP)
        s.wait_log("Reload refused", count=2)
        make_image(cfg.inbox("colorize") / "two_before.jpg", (64, 48), "L")
        wait_for(lambda: "two_after.png" in names(cfg.outbox("colorize")), 30, "a second PNG result", log=s.log)
        log = s.log()
        assert "[runtime] device" in log and "settle_secs" in log
        assert s.stop() == 0
