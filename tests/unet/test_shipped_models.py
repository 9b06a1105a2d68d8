"""The shipped models: they load, stay small, keep full resolution, and beat the bars on the plates.

The plates (the data the models were trained on, with its validation split)
live beside a developer's checkout, not in the repository: those tests skip
cleanly on a fresh clone.
"""

import subprocess
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from PIL import Image

from tests.support.processes import PLATES, PYTHON, ROOT
from unet import load_model
from unet.data import find_pairs
from unet.scores import evaluate

MODELS = ROOT / "models"
needs_plates = pytest.mark.skipif(not (PLATES / "val").is_dir(), reason="the plates data set is not beside this checkout")


@pytest.mark.parametrize("name,task", [("colorize", "colorize"), ("reverse", "translate")])
def test_shipped_model_loads_and_is_small(name, task):
    model = load_model(MODELS / name)
    assert model.task.name == task
    assert (MODELS / name / "model.safetensors").stat().st_size < 25e6
    assert {"data_fingerprint", "metrics", "code_version"} <= set(model.meta)
    # A shipped model tells where it came from relative to the repository, never a path of the machine
    # that trained it.
    paths = [v for v in model.meta.values() if isinstance(v, str) and ("/" in v or "\\" in v)]
    assert not [p for p in paths if PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute()], paths


@pytest.fixture(scope="module")
def colorize_scores():
    return evaluate(load_model(MODELS / "colorize"), find_pairs([PLATES / "val"]))


@needs_plates
def test_colorize_beats_the_baselines_and_is_colorful_on_the_plates_validation_set(colorize_scores):
    scores = colorize_scores
    assert scores.psnr > scores.tint_psnr > scores.gray_psnr
    # The pretrained encoder's colors: more vivid than the earlier U-Net's 17.2, and hues nearer the truth
    # than gray's 67.7 by the rebalanced ab AuC.
    assert scores.colorfulness >= 20
    assert scores.auc >= scores.gray_auc + 3


@needs_plates
def test_colorize_reaches_the_psnr_bar_on_the_plates_validation_set(colorize_scores):
    assert colorize_scores.psnr >= 27.4   # the shipped model: 27.44 (the earlier U-Net: 27.50, at 17.2 colorfulness)


@needs_plates
def test_reverse_beats_the_bar_on_the_plates_validation_set():
    # The reverse direction: color in, the plates' own black-and-white out.
    scores = evaluate(load_model(MODELS / "reverse"), find_pairs([PLATES / "val"], swap=True))
    assert scores.psnr >= 35


def test_a_large_photo_keeps_its_size_and_its_luminance(tmp_path, service_env):
    """reverser convert on a 4000x3000 photo: a 4000x3000 result whose luminance is the input's."""
    w, h = 4000, 3000
    yy, xx = np.mgrid[0:h, 0:w]
    gray = ((np.sin(xx / 97.0) + np.cos(yy / 61.0)) * 60 + 128 + (xx // 500) * 3).clip(0, 255).astype(np.uint8)
    src = tmp_path / "big_before.jpg"
    Image.fromarray(gray, "L").save(src, quality=95)
    r = subprocess.run([PYTHON, "-m", "daemon", "convert", "--config", str(ROOT / "config.toml"),
                        "--queue", "colorize", "-o", str(tmp_path / "out"), str(src)],
                       env=service_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = Image.open(tmp_path / "out" / "big_after.jpg")
    assert out.size == (w, h) and out.mode == "RGB"
    diff = np.abs(np.asarray(out.convert("L"), dtype=float) - np.asarray(Image.open(src), dtype=float))
    assert diff.mean() < 2.0
