"""A color photo dropped into a colorize queue follows the queue's color_inputs: keep, recolor or fail,
through a real service and a real `reverser convert`; `reverser check` takes the key and names a wrong one."""

from __future__ import annotations

import subprocess

import numpy as np
from PIL import Image

from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.pairs import tiny_champion
from tests.support.processes import PYTHON
from tests.support.service import Service, names, services, wait_for

QUICK = "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n[status]\ninterval_seconds = 0.5\n"
CHOICES = ("keep", "recolor", "fail")


def _config(tmp_path, champion, choices=CHOICES):
    """One colorize queue per choice, named after it."""
    path = write_config(tmp_path, {}, QUICK)
    with path.open("a") as f:
        for c in choices:
            f.write(f'\n[queues.{c}]\ntask = "colorize"\nmodel = "{champion}"\ncolor_inputs = "{c}"\n')
    return path


def _drop(stage, inbox):
    """A color photo (PNG), the same as a GIF, and a gray picture saved as an RGB JPEG, renamed into inbox."""
    stage.mkdir(parents=True)
    make_image(stage / "photo_before.png", (96, 64))
    Image.open(stage / "photo_before.png").convert("P").save(stage / "palette_before.gif")
    gray = np.asarray(Image.open(make_image(stage / "g.png", (96, 64), "L", seed=3)))
    Image.fromarray(np.stack([gray] * 3, -1)).save(stage / "gray_before.jpg", quality=90)
    (stage / "g.png").unlink()
    for f in sorted(stage.iterdir()):
        f.rename(inbox / f.name)


def test_a_color_photo_is_kept_recolored_or_failed_as_each_queue_says(tmp_path, service_env):
    path = _config(tmp_path, tiny_champion(tmp_path / "model"))
    cfg = load_config(path)
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for q in CHOICES:
            _drop(tmp_path / "stage" / q, cfg.inbox(q))
        for q, results in (("keep", {"photo_after.png", "palette_after.png", "gray_after.jpg"}),
                           ("recolor", {"photo_after.png", "palette_after.png", "gray_after.jpg"}),
                           ("fail", {"gray_after.jpg"})):
            wait_for(lambda: results <= set(names(cfg.outbox(q))), 30, f"the {q} queue's results")
        wait_for(lambda: {"photo_before.png.reason.txt", "palette_before.gif.reason.txt"} <= set(
            names(cfg.failed("fail"))), 30, "the fail queue's quarantined photos")
        # A result's line is written after the result is in place: wait for the lines too.
        said = ["keep: photo_before.png", "recolor: photo_before.png", "fail: photo_before.png failed"]
        said += [f"{q}: gray_before.jpg" for q in CHOICES]
        wait_for(lambda: all(w in s.log() for w in said), 30, "the results' log lines")
        log = s.log()
    photo = (tmp_path / "stage" / "keep" / "photo_before.png")   # moved away: compare with a new copy
    original = make_image(tmp_path / "again.png", (96, 64)).read_bytes()
    assert not photo.exists()
    # keep: the photo itself, byte for byte; the GIF's picture as a PNG; the gray one colorized as ever
    assert (cfg.outbox("keep") / "photo_after.png").read_bytes() == original
    with Image.open(cfg.outbox("keep") / "palette_after.png") as kept, \
            Image.open(tmp_path / "again.png") as src:
        assert np.array_equal(np.asarray(kept.convert("RGB")), np.asarray(src.convert("P").convert("RGB")))
    line = next(ln for ln in log.splitlines() if "keep: photo_before.png" in ln)
    assert 'photo_after.png' in line and 'written through unchanged ([queues.keep] color_inputs = "keep")' in line
    # recolor: its colors are replaced (today's behaviour), and the log says so
    with Image.open(cfg.outbox("recolor") / "photo_after.png") as out, Image.open(tmp_path / "again.png") as src:
        assert out.size == src.size and not np.array_equal(np.asarray(out), np.asarray(src))
    assert any("recolor: photo_before.png" in ln and "colorized anew, its own colors replaced" in ln
               for ln in log.splitlines())
    # fail: quarantined with a reason that says what to do
    reason = (cfg.failed("fail") / "photo_before.png.reason.txt").read_text()
    assert "color picture already" in reason and 'color_inputs = "fail"' in reason and '"keep"' in reason
    assert any("fail: photo_before.png failed: it is a color picture already" in ln for ln in log.splitlines())
    # the gray picture saved as RGB is no color photo: converted in every queue, without a word about color
    for q in CHOICES:
        gray_line = next(ln for ln in log.splitlines() if f"{q}: gray_before.jpg" in ln)
        assert "gray_after.jpg" in gray_line and "color" not in gray_line.split("gray_after.jpg", 1)[1]


def _convert(config, *args, env):
    return subprocess.run([PYTHON, "-m", "daemon", "convert", "--config", str(config), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_reverser_convert_follows_the_queues_choice_or_its_flag(tmp_path, service_env):
    path = _config(tmp_path, tiny_champion(tmp_path / "model"), ("fail",))
    photo = make_image(tmp_path / "in" / "photo.png", (96, 64))
    r = _convert(path, photo, "-o", tmp_path / "failed", env=service_env)
    assert r.returncode == 65 and "photo.png: failed: it is a color picture already" in r.stderr, r.stderr
    assert "set color_inputs to" in r.stderr and not (tmp_path / "failed" / "photo_after.png").exists()
    r = _convert(path, "--color-inputs", "keep", photo, "-o", tmp_path / "kept", env=service_env)
    assert r.returncode == 0 and "written through unchanged" in r.stderr, r.stderr
    assert (tmp_path / "kept" / "photo_after.png").read_bytes() == photo.read_bytes()


def _check(config, env):
    return subprocess.run([PYTHON, "-m", "daemon", "check", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_reverser_check_takes_color_inputs_and_names_a_wrong_one(tmp_path, tiny_models, service_env):
    good = _config(tmp_path / "good", tiny_models["colorize"])
    assert _check(good, service_env).returncode == 0
    for text, words in (('color_inputs = "recolour"', ["[queues.colorize] color_inputs", "'keep' or 'recolor'"]),
                        ('[queues.reverse]\ncolor_inputs = "keep"', ["[queues.reverse] color_inputs",
                                                                     "only a colorize queue"])):
        folder = tmp_path / words[0].split()[0].strip("[]")
        config = write_config(folder, tiny_models)
        body = config.read_text()
        if text.startswith("[queues.reverse]"):
            body = body.replace('task = "translate"', 'task = "translate"\ncolor_inputs = "keep"')
        else:
            body = body.replace('task = "colorize"', 'task = "colorize"\n' + text)
        config.write_text(body)
        r = _check(config, service_env)
        assert r.returncode == 78 and all(w in r.stderr for w in words), r.stderr
