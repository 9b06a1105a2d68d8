"""Model folders: round trip, and clear refusals for anything else, pickles above all."""

import json
import pickle

import pytest
import torch
from PIL import Image

from unet import CheckpointError, Predictor, TaskConfig, UNetConfig, load_model, new_model, save_model


def _tiny(name="colorize"):
    task = TaskConfig(name, work_long=32, bins_per_axis=4) if name == "colorize" else TaskConfig(name, work_long=32)
    torch.manual_seed(0)
    return new_model(task, UNetConfig(widths=(4, 8)))


def test_round_trip_gives_the_same_outputs(tmp_path):
    m = _tiny()
    for p in m.net.parameters():  # something other than the initial values
        p.data.add_(0.01 * torch.randn_like(p))
    save_model(m, tmp_path / "m", version=3, parent=2)
    back = load_model(tmp_path / "m")
    assert back.meta["version"] == 3 and back.meta["parent"] == 2 and "code_version" in back.meta
    im = Image.linear_gradient("L").resize((50, 40))
    a = Predictor(m, "cpu").predict([im])[0]
    b = Predictor(back, "cpu").predict([im])[0]
    assert a.tobytes() == b.tobytes()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "meta.json", "model.safetensors"]


class _Payload:
    """Unpickling this runs code: it would create the file named in marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_checkpoint_is_refused_and_never_runs(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    marker = tmp_path / "payload-ran"
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(folder)
    # torch.save format too (a zip holding a pickle)
    torch.save({"x": _Payload(marker)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(folder)
    assert not marker.exists()


def test_only_a_pickle_beside_the_config_is_refused_with_advice(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    marker = tmp_path / "payload-ran"
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickled checkpoints are refused"):
        load_model(folder)
    assert not marker.exists()


def test_corrupt_weights_name_the_file(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(folder)


def test_wrong_architecture_is_refused(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["unet"]["widths"] = [8, 16]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load_model(folder)


def test_task_and_channels_must_agree(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["task"]["name"] = "translate"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(folder)


@pytest.mark.parametrize("victim", ["config.json", "meta.json", "model.safetensors"])
def test_a_missing_file_is_named(tmp_path, victim):
    folder = save_model(_tiny("translate"), tmp_path / "m")
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=victim):
        load_model(folder)


def test_bad_json_is_named(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_model(folder)


def test_non_finite_weights_are_refused(tmp_path):
    m = _tiny()
    with torch.no_grad():
        m.net.head.weight[0, 0] = float("nan")
    folder = save_model(m, tmp_path / "m")
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")
