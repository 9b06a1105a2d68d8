"""reverser convert with color points: X_hints.json or .png beside an input, or --hints FILE for one input."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from daemon.commands.cli import main as cli
from tests.support.config import write_config
from tests.support.service import names
from unet.metrics import rgb_to_ab

BLUE = "#98c0ff"   # a blue a light gray (200) can hold at its own lightness
POINTS = {"points": [{"x": x, "y": y, "color": BLUE} for x, y in ((0.2, 0.3), (0.5, 0.5), (0.8, 0.7))]}


def light_field(path, size=(96, 64)):
    rng = np.random.default_rng(0)
    Image.fromarray((200 + rng.normal(0, 3, size[::-1])).clip(0, 255).astype(np.uint8)).save(path)
    return path


def blue_gap(path) -> float:
    """How far the result's ab is from the asked blue, at the points (the largest)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    want = rgb_to_ab(np.array([int(BLUE[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64))
    h, w = rgb.shape[:2]
    return max(np.hypot(*(rgb_to_ab(rgb[int(p["y"] * h), int(p["x"] * w)]) - want)) for p in POINTS["points"])


def test_hints_beside_an_input_color_it_and_are_never_taken_for_a_picture(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    folder = tmp_path / "photos"
    folder.mkdir()
    light_field(folder / "a_before.png")
    light_field(folder / "b.png")
    (folder / "a_hints.json").write_text(json.dumps(POINTS))
    assert cli(["convert", "--config", str(cfg), "--queue", "colorize", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "converted 2 of 2 file(s)" in err and "a_after.png: colored with 3 color points" in err
    assert names(folder) == ["a_after.png", "a_before.png", "a_hints.json", "b.png", "b_after.png"]
    assert blue_gap(folder / "a_after.png") <= 10 < blue_gap(folder / "b_after.png")


def test_hints_given_for_one_input_color_it_and_not_for_two(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    one, two = light_field(tmp_path / "one.png"), light_field(tmp_path / "two.png")
    said = tmp_path / "said.json"
    said.write_text(json.dumps(POINTS))
    assert cli(["convert", "--config", str(cfg), "--queue", "colorize", "--hints", str(said), str(one)]) == 0
    assert blue_gap(tmp_path / "one_after.png") <= 10
    assert cli(["convert", "--config", str(cfg), "--queue", "colorize", "--hints", str(said), str(one),
                str(two)]) == 64
    assert "--hints is for one input" in capsys.readouterr().err
    assert not (tmp_path / "two_after.png").exists()


def test_bad_hints_fail_their_picture_alone_with_the_reason(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    folder = tmp_path / "photos"
    folder.mkdir()
    light_field(folder / "bad.png")
    light_field(folder / "good.png")
    (folder / "bad_hints.json").write_text('{"points": [{"x": 1.5, "y": 0.5, "color": "#98c0ff"}]}')
    assert cli(["convert", "--config", str(cfg), "--queue", "colorize", str(folder)]) == 65
    err = capsys.readouterr().err
    assert "bad.png: failed: bad hints:" in err and "outside the picture" in err
    assert "converted 1 of 2 file(s); 1 failed" in err
    assert names(folder) == ["bad.png", "bad_hints.json", "good.png", "good_after.png"]


def test_hints_for_a_model_that_does_not_colorize_are_refused_with_the_reason(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    one = light_field(tmp_path / "one.png")
    (tmp_path / "one_hints.json").write_text(json.dumps(POINTS))
    assert cli(["convert", "--config", str(cfg), "--queue", "reverse", str(one)]) == 65
    assert "color points are for colorizing" in capsys.readouterr().err
    assert not (tmp_path / "one_after.png").exists()
