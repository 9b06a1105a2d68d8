"""reverser train: the job in the foreground; --out writes a model and touches no registry."""

import json

import pytest
import torch

from daemon.commands.cli import main as cli
from daemon.core.config import load_config
from daemon.learning.registry import Registry
from daemon.learning.retrain import training_lock
from tests.support.config import write_config
from tests.support.pairs import tiny_champion, write_pairs
from unet import load_model
from unet.data import is_val


@pytest.fixture(autouse=True)
def one_thread():
    # The foreground command trains with torch's default threads; keep the test suite to one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup(tmp_path):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped}, "[retrain]\nmax_minutes = 1\nmin_holdout_pairs = 5\n")
    pairs = write_pairs(tmp_path / "plates", 40)
    return config, load_config(config), pairs


def test_out_writes_a_new_model_folder_and_touches_no_registry(setup, tmp_path, capsys):
    config, cfg, pairs = setup
    out = tmp_path / "models" / "colorize"
    code = cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--epochs", "3", "--out", str(out), "--from-scratch", "--val-percent", "30"])
    assert code == 0, capsys.readouterr()
    model = load_model(out)                                       # a complete, loadable model folder
    assert model.meta["pairs"] == 40 and model.meta["metrics"]["psnr"] > 0
    held = sum(is_val(p.stem.rsplit("_", 1)[0], 30) for p in pairs.glob("*_before.*"))
    assert model.meta["metrics"]["pairs"] == held and 0 < held < 40  # --val-percent, not [retrain] val_percent
    assert model.net.cfg == load_model(cfg.queues["colorize"].model).net.cfg, "the shipped architecture"
    assert not cfg.state_dir("models").exists() or not any(cfg.state_dir("models", "colorize").glob("v*"))
    assert not list(out.parent.glob(".*")), "no temporary folders left beside it"
    printed = capsys.readouterr().out
    assert "model written" in printed and "report.png" in printed
    [report] = cfg.state_dir("reports", "colorize").glob("*/report.json")
    assert json.loads(report.read_text())["decision"] == "written"


def test_a_new_network_without_a_shipped_model_has_the_recipe_defaults(tmp_path):
    # How the shipped models are first made: no model folder yet, so nothing to copy the shape from.
    from daemon.learning.challenger import TrainJob, _starting_model
    from unet.recipe import recipe

    job = TrainJob(queue="colorize", task="colorize", pairs=(), out=str(tmp_path), report=str(tmp_path))
    said = []
    model = _starting_model(job, said.append)
    task_cfg, unet_cfg = recipe("colorize")
    assert model.task_cfg == task_cfg
    assert model.net.cfg.widths == unet_cfg.widths and model.meta == {}  # {}: trained at the full rate
    assert "recipe's default architecture" in said[0]


def test_no_promote_registers_a_better_model_without_promoting_it(setup, capsys):
    config, cfg, pairs = setup
    code = cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--epochs", "20", "--no-promote"])
    assert code == 0
    reg = Registry(cfg.state_dir("models", "colorize"))
    assert reg.champion_version() == 1 and reg.version(2).status == "rejected"
    assert "--no-promote" in reg.version(2).meta["why"] and "passes the rule" in reg.version(2).meta["why"]
    assert reg.history()[-1]["who"].startswith("reverser train")
    assert "stays champion" in capsys.readouterr().out


def test_force_promotes_whatever_the_scores(setup, tmp_path):
    config, cfg, _ = setup
    bad = write_pairs(tmp_path / "scrambled", 40, scramble=True)
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(bad),
                "--epochs", "2", "--force"]) == 0
    reg = Registry(cfg.state_dir("models", "colorize"))
    assert reg.champion_version() == 2 and reg.version(2).meta["why"].startswith("forced (--force)")


def test_arguments_that_cannot_work_are_refused_before_training(setup, tmp_path, capsys):
    config, cfg, pairs = setup
    base = ["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs)]
    assert cli(base + ["--force", "--no-promote"]) == 64
    assert "contradict" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert cli(base + ["--out", str(tmp_path / "notes")]) == 64
    assert "not a model folder" in capsys.readouterr().err and (tmp_path / "notes" / "todo.txt").exists()
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(tmp_path / "nope")]) == 64
    assert "not found" in capsys.readouterr().err
    assert cli(base + ["--epochs", "0", "--from-scratch", "--out", str(tmp_path / "new")]) == 64
    assert "0 with a model to start from" in capsys.readouterr().err
    assert cli(base + ["--val-percent", "60", "--out", str(tmp_path / "new")]) == 64
    assert "1 to 50" in capsys.readouterr().err


def test_zero_epochs_scores_and_calibrates_a_model_without_training_it(setup, tmp_path, capsys):
    config, cfg, pairs = setup
    out = tmp_path / "recalibrated"
    code = cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--epochs", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr()
    before, after = load_model(cfg.queues["colorize"].model), load_model(out)
    assert all(torch.equal(before.net.state_dict()[k], v) for k, v in after.net.state_dict().items())
    assert after.meta["metrics"]["psnr"] > 0 and after.task_cfg.gain >= 1


def test_a_second_training_run_for_the_same_queue_waits_its_turn(setup, capsys):
    config, cfg, pairs = setup
    with training_lock(cfg.state_dir("models", "colorize")):
        assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                    "--epochs", "1"]) == 75
    assert "in progress" in capsys.readouterr().err
    assert Registry(cfg.state_dir("models", "colorize")).champion_version() == 1  # nothing registered


def test_the_same_seed_trains_the_same_model_and_another_seed_another(setup, tmp_path, capsys):
    config, cfg, pairs = setup
    models = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        out = tmp_path / name
        assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                    "--epochs", "1", "--out", str(out), "--from-scratch", "--seed", seed]) == 0, capsys.readouterr()
        models[name] = load_model(out).net.state_dict()
    same = all(torch.equal(models["a"][k], v) for k, v in models["b"].items())
    other = all(torch.equal(models["a"][k], v) for k, v in models["c"].items())
    assert same and not other


@pytest.mark.parametrize("how", ["fine-tune", "from scratch"])
def test_minutes_leave_room_for_the_scoring_after_training(setup, tmp_path, capsys, how):
    # --minutes cover the whole command: the loop stops early enough for the calibration and the
    # full-size scores after it, timed on the champion (scored first) or, without one, on a few pairs.
    config, cfg, pairs = setup
    extra = [] if how == "fine-tune" else ["--from-scratch", "--out", str(tmp_path / "new")]
    assert cli(["train", "--config", str(config), "--queue", "colorize", "--pairs", str(pairs),
                "--minutes", "0.25", *extra]) == 0
    err = capsys.readouterr().err
    [report] = cfg.state_dir("reports", "colorize").glob("*/report.json")
    b = json.loads(report.read_text())["budget"]
    held = json.loads(report.read_text())["val_pairs"]
    timed = "on the champion" if how == "fine-tune" else "on a few pairs"
    assert f"budget 0.25 min in all: {b['before_s']:.0f} s gone" in err and f"(timed {timed})" in err
    # What is kept: the timed calibration and scoring, as much again for the contact sheet's pairs, a margin.
    assert b["kept_after_s"] == pytest.approx(b["timed_after_s"] * (1 + 2 * min(4, held) / held) + 5, abs=0.2)
    # The loop's time is the budget less what went before it and what is kept after it.
    assert b["training_allotted"] <= 15 - b["before_s"] - b["kept_after_s"] + 0.2 or b["training_allotted"] == 0
    assert b["calibration"] > 0 and b["scoring"] > 0 and "s in all, of a budget of 0.25 min" in err


def test_a_queue_with_no_pairs_filed_yet_says_where_to_drop_them(setup, capsys):
    config, cfg, _ = setup                 # no --pairs, and the service has filed none: no pairs folder at all
    code = cli(["train", "--config", str(config), "--queue", "colorize", "--epochs", "1"])
    err = capsys.readouterr()
    assert code != 0
    text = err.out + err.err
    assert "none filed yet" in text and "NAME_before + NAME_after" in text and " in :" not in text
