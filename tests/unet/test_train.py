"""Training: the loss goes down, NaN stops it cleanly, the result is scored."""

import math

import pytest
import torch

from tests.support.images import make_image
from unet import TaskConfig, UNetConfig, new_model
from unet.data import find_pairs
from unet.train import DETAIL_GAINS, GAINS, TINT_GAINS, TrainConfig, TrainingError, train


def _pairs(folder, n=12, task="colorize"):
    """Pairs learnable in seconds: colors that follow the picture's pattern (colorize), or the
    black-and-white a red filter gives (translate: not the plain luminance the model starts from)."""
    from PIL import Image

    for i in range(n):
        color = make_image(folder / f"p{i}_{'after' if task == 'colorize' else 'before'}.png", (48, 32), seed=i)
        if task == "colorize":
            Image.open(color).convert("L").save(folder / f"p{i}_before.png")
        else:
            Image.open(color).getchannel("R").save(folder / f"p{i}_after.png")
    pairs = find_pairs([folder])
    return pairs[: n - 3], pairs[n - 3:]


@pytest.mark.parametrize("task", [
    TaskConfig("colorize", work_long=32, bins_per_axis=6),
    TaskConfig("colorize", work_long=32, head="regression"),
    TaskConfig("colorize", work_long=32, head="blend", bins_per_axis=6),
    TaskConfig("translate", work_long=32, out_channels=1),
])
def test_a_short_run_lowers_the_loss(tmp_path, task):
    train_pairs, val_pairs = _pairs(tmp_path, task=task.name)
    torch.manual_seed(0)
    model = new_model(task, UNetConfig(widths=(8, 16), middle_blocks=1))
    logs = []
    result = train(model, train_pairs, val_pairs, TrainConfig(epochs=15, batch_size=4, lr=5e-3, threads=1,
                                                              eval_every_s=0), log=logs.append, progress=False)
    first, last = result.history[1], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert math.isfinite(result.metrics.psnr) and result.metrics.pairs == 3
    if task.name == "colorize":
        assert {"colorfulness", "gray_psnr", "tint_psnr"} <= set(result.metrics.as_dict())
    if task.name == "colorize":  # the decoding is calibrated on the run's validation pairs
        line = next(line for line in logs if line.startswith("decoding "))
        assert "gain" in line and {"bins": "temperature", "blend": "blend"}.get(task.head, "gain") in line
        assert model.task_cfg.gain in DETAIL_GAINS
        assert model.task_cfg.tint_gain in set(TINT_GAINS) | set(GAINS)


def test_chroma_gain_scales_the_decoded_chroma_within_range():
    task = new_model(TaskConfig("colorize", work_long=32, head="regression"), UNetConfig(widths=(8, 16))).task
    y = torch.randn(1, 2, 4, 4)
    plain, vivid = task.chroma(y), task.chroma(y, gain=1.5)
    assert torch.allclose(vivid, (plain * 1.5).clamp(-0.5, 0.5))
    assert vivid.abs().max() <= 0.5
    with pytest.raises(ValueError, match="gain"):
        TaskConfig("colorize", gain=0)


def test_a_nan_loss_stops_training_with_a_clear_error(tmp_path):
    train_pairs, val_pairs = _pairs(tmp_path, 6)
    model = new_model(TaskConfig("translate", work_long=32), UNetConfig(widths=(8, 16)))
    with torch.no_grad():
        model.net.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss became nan"):
        train(model, train_pairs, val_pairs, TrainConfig(epochs=1, batch_size=2, threads=1), log=lambda s: None,
              progress=False)


def test_no_pairs_is_a_clear_error(tmp_path):
    model = new_model(TaskConfig("translate", work_long=32), UNetConfig(widths=(8, 16)))
    with pytest.raises(TrainingError, match="no usable training pairs"):
        train(model, [], [], TrainConfig(epochs=1), log=lambda s: None, progress=False)


def test_training_can_be_stopped(tmp_path):
    train_pairs, val_pairs = _pairs(tmp_path, 6)
    model = new_model(TaskConfig("translate", work_long=32), UNetConfig(widths=(8, 16)))
    result = train(model, train_pairs, val_pairs, TrainConfig(epochs=1000, batch_size=2, threads=1),
                   log=lambda s: None, progress=False, should_stop=lambda: True)
    assert result.stopped == "stopped"


@pytest.mark.parametrize("head", ["bins", "blend", "regression"])
def test_calibration_scores_each_setting_as_its_own_decode_would(tmp_path, head):
    # calibrate() scores hundreds of gain settings: the decode is shared by those differing only in
    # their gains, and each must score exactly as decoding it alone (task.chroma with its knobs) does.
    from unet import calibration
    from unet.data import PairSet
    from unet.metrics import colorfulness
    from unet.objective import Objective

    _, val_pairs = _pairs(tmp_path, 12)
    torch.manual_seed(0)
    model = new_model(TaskConfig("colorize", work_long=32, head=head, bins_per_axis=6),
                      UNetConfig(widths=(8, 16), middle_blocks=1))
    model.net.eval()
    data = PairSet(val_pairs, model.task.shape_for, model.task.in_channels, log=lambda s: None)
    objective = Objective(model.task, data, TrainConfig(epochs=1))
    first = calibration._settings(head)
    settings = first[::7] + calibration._split_gains(first[-1])[::11] + [None]
    shared = calibration.working_scores(objective, model.net, data, 4, settings)
    for setting in settings:
        alone = calibration.working_scores(objective, model.net, data, 4, [setting])
        assert shared["psnr"][setting] == alone["psnr"][setting], setting
        assert shared["colorfulness"][setting] == alone["colorfulness"][setting], setting
    # Colorfulness in float32 agrees with the full-size metric's float64 formula.
    rgb = torch.rand(2, 3, 40, 30)
    from PIL import Image
    for got, image in zip(calibration._colorfulness_t(rgb), rgb):
        pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype("uint8"), "RGB")
        assert got == pytest.approx(colorfulness(pil), abs=0.05)


def test_a_deadline_cuts_the_training_loop_and_the_phases_are_timed(tmp_path):
    import time

    train_pairs, val_pairs = _pairs(tmp_path)
    model = new_model(TaskConfig("colorize", work_long=32, bins_per_axis=6), UNetConfig(widths=(8, 16)))
    logs = []
    result = train(model, train_pairs, val_pairs, TrainConfig(minutes=10, epochs=2, threads=1), log=logs.append,
                   progress=False, ends_by=time.monotonic() + 60)
    # 10 minutes asked, 60 s to the deadline: the loop may have what is left of the 60 s, less one
    # evaluation (the 2 epochs end it sooner).
    assert 0 < result.seconds["training_allotted"] <= 60 and result.stopped == "budget"
    assert set(result.seconds) == {"set_up", "training", "calibration", "scoring", "training_allotted"}
    assert any(line.startswith("training for ") and "calibration and scores that follow" in line for line in logs)
    no_deadline = train(model, train_pairs, val_pairs, TrainConfig(epochs=1, threads=1), log=lambda s: None,
                        progress=False)
    assert "training_allotted" not in no_deadline.seconds and no_deadline.seconds["calibration"] > 0


def test_a_second_run_on_the_same_pairs_reuses_them_as_loaded(tmp_path):
    # The champion is calibrated before the challenger trains on the same pairs: load them once.
    train_pairs, val_pairs = _pairs(tmp_path)
    task, arch = TaskConfig("colorize", work_long=32, bins_per_axis=6), UNetConfig(widths=(8, 16))
    first = train(new_model(task, arch), train_pairs, val_pairs, TrainConfig(epochs=0, threads=1),
                  log=lambda s: None, progress=False)
    torch.manual_seed(0)
    again = train(new_model(task, arch), train_pairs, val_pairs, TrainConfig(epochs=1, threads=1),
                  log=lambda s: None, progress=False, loaded=first.loaded)
    assert again.loaded.train_set is first.loaded.train_set and again.loaded.objective is first.loaded.objective
    torch.manual_seed(0)
    fresh = train(new_model(task, arch), train_pairs, val_pairs, TrainConfig(epochs=1, threads=1),
                  log=lambda s: None, progress=False)
    assert again.metrics.psnr == fresh.metrics.psnr                  # the same run, loaded or not
    other = train(new_model(TaskConfig("colorize", work_long=48, bins_per_axis=6), arch), train_pairs, val_pairs,
                  TrainConfig(epochs=0, threads=1), log=lambda s: None, progress=False, loaded=first.loaded)
    assert other.loaded.train_set is not first.loaded.train_set          # another working size loads its own
