"""Color points in the inbox, through a running service: NAME_hints.json beside NAME_before.EXT colors it,
moves to done/ with it, re-colors a picture done/ keeps, and waits, listed, when it matches no picture."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.processes import PYTHON, child_env
from tests.support.service import Service, names, wait_for

BLUE, GREEN = (40, 70, 240), (40, 220, 60)


@pytest.fixture(scope="module")
def env():
    return child_env()


def start(root, tiny_models, env, extra=""):
    cfg = write_config(root, tiny_models, "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n"
                                          "[status]\ninterval_seconds = 0.3\n" + extra)
    s = Service(cfg, env, root / "service.log", "--log-json").wait_ready()
    s.cfg = load_config(cfg)
    return s


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_models, env):
    s = start(tmp_path_factory.mktemp("hints"), tiny_models, env)
    yield s
    assert s.stop() == 0


def hints(folder, name, color, x=0.5, y=0.5):
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"points": [{"x": x, "y": y, "color": "#%02x%02x%02x" % color}]})
    (folder / f".{name}").write_text(text)
    os.rename(folder / f".{name}", folder / name)   # whole, as a careful writer drops it


def picture(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    gray = (np.linspace(70, 190, 96)[None, :] + np.zeros((64, 1))).astype(np.uint8)
    Image.fromarray(gray, "L").save(folder / f".{name}.png")
    os.rename(folder / f".{name}.png", folder / name)


def middle(path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    h, w, _ = rgb.shape
    return rgb[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2].reshape(-1, 3).mean(0)


def wait_file(s, folder, name, timeout=60):
    return wait_for(lambda: (folder / name).exists(), timeout, f"{name} in {folder}", log=s.log)


def test_a_picture_with_its_hints_is_colored_with_them_and_both_move_to_done(svc):
    inbox, done = svc.cfg.inbox("colorize"), svc.cfg.state_dir("done", "colorize")
    hints(inbox, "cup_hints.json", BLUE)
    picture(inbox, "cup_before.png")
    wait_file(svc, svc.cfg.outbox("colorize"), "cup_after.png")
    r, g, b = middle(svc.cfg.outbox("colorize") / "cup_after.png")
    assert b > r + 40 and b > g + 20, (r, g, b)
    wait_for(lambda: {"cup_before.png", "cup_hints.json"} <= set(names(done)), 30, "both in done/", log=svc.log)
    assert not [n for n in names(inbox) if n.startswith("cup")]
    [line] = [json.loads(x) for x in svc.log().splitlines() if '"cup_before.png"' in x and "cup_after" in x]
    assert "colored with 1 color point" in line["message"]


def test_hints_dropped_for_a_done_picture_recolor_it_and_the_earlier_result_stays(svc):
    inbox, outbox, done = svc.cfg.inbox("colorize"), svc.cfg.outbox("colorize"), svc.cfg.state_dir("done", "colorize")
    picture(inbox, "look_before.png")
    wait_file(svc, outbox, "look_after.png")
    wait_file(svc, done, "look_before.png")
    first = (outbox / "look_after.png").read_bytes()
    hints(inbox, "look_hints.json", GREEN)
    wait_file(svc, outbox, "look_after-1.png")
    r, g, b = middle(outbox / "look_after-1.png")
    assert g > r + 40 and g > b + 40, (r, g, b)
    assert (outbox / "look_after.png").read_bytes() == first
    wait_for(lambda: {"look_before.png", "look_hints.json"} <= set(names(done)), 30, "both in done/", log=svc.log)
    assert not [n for n in names(inbox) if n.startswith("look")] and "look_before-1.png" not in names(done)


def test_bad_hints_fail_their_picture_with_the_reason_and_both_go_to_failed(svc):
    inbox, failed = svc.cfg.inbox("colorize"), svc.cfg.failed("colorize")
    inbox.joinpath(".bad").write_text('{"points": [{"x": 2.0, "y": 0.5, "color": "#ff0000"}]}')
    os.rename(inbox / ".bad", inbox / "odd_hints.json")
    picture(inbox, "odd_before.png")
    wait_file(svc, failed, "odd_hints.json.reason.txt")
    wait_file(svc, failed, "odd_before.png.reason.txt")
    assert "bad hints" in (failed / "odd_before.png.reason.txt").read_text()
    assert "its picture odd_before.png failed" in (failed / "odd_hints.json.reason.txt").read_text()
    assert "odd_after.png" not in names(svc.cfg.outbox("colorize"))


def test_points_for_a_queue_that_does_not_colorize_are_refused_with_the_picture(svc):
    inbox, failed = svc.cfg.inbox("reverse"), svc.cfg.failed("reverse")
    hints(inbox, "gray_hints.json", BLUE)
    picture(inbox, "gray_before.png")
    wait_file(svc, failed, "gray_before.png.reason.txt")
    assert "colori" in (failed / "gray_before.png.reason.txt").read_text()
    wait_file(svc, failed, "gray_hints.json")


def test_hints_that_match_no_picture_wait_listed_by_status(svc, env):
    inbox = svc.cfg.inbox("colorize")
    hints(inbox, "lonely_hints.json", BLUE)

    def listed():
        r = subprocess.run([PYTHON, "-m", "daemon", "status", "--config", str(svc.config), "--json"],
                           env=env, capture_output=True, text=True, timeout=60)
        waiting = json.loads(r.stdout)["queues"]["colorize"].get("hints_waiting") or {}
        return [e for e in waiting.get("files", []) if e["name"] == "lonely_hints.json"]

    [entry] = wait_for(listed, 60, "the hints listed as waiting", every=0.5, log=svc.log)
    assert entry["waits_for"] == "lonely_before.*" and entry["refused_in_seconds"] > 60
    r = subprocess.run([PYTHON, "-m", "daemon", "status", "--config", str(svc.config)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert "color points waiting for their picture: 1" in r.stdout and "lonely_hints.json" in r.stdout
    assert (inbox / "lonely_hints.json").exists()


def test_hints_that_wait_past_the_timeout_are_refused_with_a_reason(tmp_path, tiny_models, env):
    s = start(tmp_path, tiny_models, env, "[retrain]\npair_timeout_minutes = 0.02\n")
    try:
        hints(s.cfg.inbox("colorize"), "alone_hints.json", BLUE)
        wait_file(s, s.cfg.failed("colorize"), "alone_hints.json.reason.txt")
        reason = (s.cfg.failed("colorize") / "alone_hints.json.reason.txt").read_text()
        assert "for its picture alone_before.*" in reason and "none came" in reason
        assert not (s.cfg.inbox("colorize") / "alone_hints.json").exists()
    finally:
        assert s.stop() == 0
