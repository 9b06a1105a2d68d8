"""The promotion rule: a gain must hold over the held-out pictures, not rest on one or two of them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.commands.cli import main as cli
from daemon.core.config import ConfigError, load_config
from daemon.learning.promotion import decide, paired_gain
from daemon.learning.registry import Registry
from tests.support.config import write_config
from tests.support.pairs import by_rule, scene, tiny_champion
from unet.data import is_val
from unet.scores import Scores


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scores(each):
    return Scores(psnr=float(np.mean(each)), psnr_each=tuple(each), pairs=len(each))


def test_a_gain_on_two_pictures_of_twenty_is_not_sure_and_a_gain_on_all_is():
    champion = [30.0] * 20
    two = [40.0, 40.0] + [29.9] * 18                      # mean +0.91 dB, all of it from two pictures
    promote, why = decide("translate", _scores(two), _scores(champion), 0.05, confidence=0.95, min_pairs=10)
    assert not promote and "not sure" in why and "better on 2 of 20" in why
    assert decide("translate", _scores(two), _scores(champion), 0.05)[0], "the mean alone would promote it"
    rng = np.random.default_rng(1)
    base = 30 + rng.normal(0, 1.0, 20)
    steady = base + 0.3 + rng.normal(0, 0.1, 20)          # +0.3 dB on every picture
    promote, why = decide("translate", _scores(steady), _scores(base), 0.05, confidence=0.95, min_pairs=10)
    assert promote and "with 95% confidence" in why


def test_the_bound_is_the_same_every_time_and_tighter_at_lower_confidence():
    ours, theirs = [31, 30.5, 30.2, 30.9, 30.1, 30.4], [30, 30.3, 30.4, 30.0, 30.2, 30.1]
    a, b = paired_gain(ours, theirs, 0.95), paired_gain(ours, theirs, 0.95)
    assert a == b and a.lower_db < paired_gain(ours, theirs, 0.8).lower_db < a.mean_db


def test_too_few_held_out_pairs_decide_nothing():
    each = [35.0] * 4
    promote, why = decide("translate", _scores(each), _scores([30.0] * 4), 0.05, confidence=0.95, min_pairs=10)
    assert not promote and "only 4 held-out pairs" in why


def test_the_confidence_and_the_minimum_are_checked_with_the_config(tmp_path):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    for bad, said in (("promotion_confidence = 1.5", "promotion_confidence"), ("min_holdout_pairs = 0",
                                                                                  "min_holdout_pairs")):
        with pytest.raises(ConfigError, match=said):
            load_config(write_config(tmp_path, {"colorize": shipped}, f"[retrain]\n{bad}\n"))


def _held_out_set(folder, val_percent, *, train=40, rule=2, far=8):
    """Pairs by the rule to train on, and a held-out set (names the split holds out) of `rule` pairs by
    the rule and `far` whose truth is a saturated magenta no model predicts: training on the rule gains
    several dB on the first kind and loses a little on the second."""
    folder.mkdir(parents=True)
    counts, i = {"train": 0, "rule": 0, "far": 0}, 0
    while counts["train"] < train or counts["rule"] < rule or counts["far"] < far:
        i += 1
        name, lum = f"p{i:03d}", scene(i)
        if not is_val(name, val_percent):
            kind = "train" if counts["train"] < train else None
        else:
            kind = "rule" if counts["rule"] < rule else "far" if counts["far"] < far else None
        if kind is None:
            continue
        counts[kind] += 1
        if kind == "far":
            ycc = np.stack([lum, np.full_like(lum, 220), np.full_like(lum, 220)], -1).clip(0, 255)
            after = Image.fromarray(ycc.astype(np.uint8), "YCbCr").convert("RGB")
        else:
            after = by_rule(lum)
        Image.fromarray(lum.astype(np.uint8), "L").save(folder / f"{name}_before.png")
        after.save(folder / f"{name}_after.png")
    return folder


def test_a_real_run_whose_gain_rests_on_two_pictures_is_not_promoted(tmp_path, capsys):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped}, "[retrain]\nmax_minutes = 1\nval_percent = 30\n")
    pairs = _held_out_set(tmp_path / "pairs", 30)
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--epochs", "40"]) == 0, capsys.readouterr()
    cfg = load_config(config)
    [report] = cfg.state_dir("reports", "colorize").glob("*/report.json")
    data = json.loads(report.read_text())
    paired = data["rule"]["paired"]
    gains = sorted(paired["gains_db"], reverse=True)
    # What the run was built to be: the mean clears the margin, and only two pictures are better.
    assert paired["mean_db"] > data["margin"] and gains[1] > 2 and max(gains[2:]) < 0, gains
    assert decide("colorize", Scores.from_dict(data["challenger"]), Scores.from_dict(data["champion"]),
                  data["margin"])[0], \
        "by the mean alone (and colorfulness, hues, baselines) it would be promoted"
    assert data["decision"] == "rejected" and data["why"].startswith("its gain is not sure"), data["why"]
    assert Registry(cfg.state_dir("models", "colorize")).champion_version() == 1
    printed = capsys.readouterr().out
    assert "not sure" in printed and "rule: gain of at least 0.05 dB with 95% confidence" in printed
    assert (report.parent / "report.png").is_file()
    from daemon.learning.report import _header
    from daemon.learning.promotion import TrainingOutcome
    header = _header(data, TrainingOutcome("colorize", "rejected", data["why"], 2, 1), "colorize")
    assert any("better on 2 of 10" in line for line in header), header          # the figures on report.png
    assert cli(["models", "--config", str(config), "--queue", "colorize", "list"]) == 0
    table = capsys.readouterr().out
    [row] = [line for line in table.splitlines() if line.split()[:2] == ["2", "rejected"]]
    assert f"10 of {data['pairs']}" in row and f"{paired['mean_db']:+.2f} ({paired['lower_db']:+.2f})" in row
    assert "held-out training pairs" in table and "not the plates' val folder" in table


def test_twenty_pairs_hold_out_too_few_and_the_run_says_how_to_hold_out_more(tmp_path, capsys):
    from tests.support.pairs import write_pairs

    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped}, "[retrain]\nmax_minutes = 1\n")
    pairs = write_pairs(tmp_path / "plates", 20)
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--epochs", "1"]) == 0
    out = capsys.readouterr()
    data = json.loads(next(load_config(config).state_dir("reports", "colorize").glob("*/report.json")).read_text())
    assert data["decision"] == "rejected" and data["rule"]["too_few"]
    for said in (out.out, data["why"]):
        assert "held-out pairs" in said and "--val-percent" in said and "min_holdout_pairs" in said


def test_pairs_that_leave_none_to_score_name_val_percent(tmp_path, capsys):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped}, "[retrain]\nmax_minutes = 1\n")
    folder = tmp_path / "few"
    folder.mkdir()
    names = [n for n in (f"q{i:03d}" for i in range(200)) if not is_val(n, 15)][:12]
    for n in names:                                                  # 12 pairs, none of them held out
        lum = scene(len(n))
        Image.fromarray(lum.astype(np.uint8), "L").save(folder / f"{n}_before.png")
        by_rule(lum).save(folder / f"{n}_after.png")
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(folder),
                "--epochs", "1"]) == 65
    out = capsys.readouterr()
    assert "0 to score" in out.out and "--val-percent" in out.out and "[retrain] val_percent" in out.out
