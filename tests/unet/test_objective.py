"""The colorize loss ranks results the way mean PSNR does; each pair's error floor; the decoding gains."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.images import make_image
from unet import TaskConfig, UNetConfig, new_model
from unet.objective import CHROMA_TO_RGB, Objective, error_floor
from unet.tasks import vivid
from unet.train import TrainConfig


def _colorizer(**task):
    return new_model(TaskConfig("colorize", **{"work_long": 32, "head": "regression", **task}),
                     UNetConfig(widths=(8, 16), out_stride=1))


def _logits_for(chroma: torch.Tensor) -> torch.Tensor:
    """The regression head's raw output that decodes to this chroma (0.5 * tanh(y) = chroma)."""
    return torch.atanh(chroma / 0.5)


def test_the_psnr_loss_prefers_what_mean_psnr_prefers_where_mean_squared_error_does_not():
    task = _colorizer().task
    after = torch.full((2, 3, 8, 8), 0.5)     # a gray truth: its chroma is zero
    before = torch.full((2, 1, 8, 8), 0.5)

    def prediction(errors):  # a flat chroma error per image, sized to give these RGB mean squared errors
        unit = CHROMA_TO_RGB[:, 1].pow(2).mean()   # RGB mse of a Cr error of 1
        return torch.stack([torch.stack([torch.zeros(8, 8), torch.full((8, 8), math.sqrt(e / unit))])
                            for e in errors])

    # A: one picture near perfect, one poor. B: both middling. Mean PSNR prefers A, mean error prefers B.
    a, b = prediction([1e-4, 1e-2]), prediction([5e-4, 5e-3])
    for name, want in (("psnr", "a"), ("mse", "b")):
        objective = Objective(task, None, TrainConfig(epochs=1, regression_loss=name))
        floor = torch.zeros(2)
        la, lb = (objective.loss(_logits_for(p), before, after, floor).item() for p in (a, b))
        assert (la < lb) == (want == "a"), (name, la, lb)
    assert np.mean([-10 * math.log10(e) for e in (1e-4, 1e-2)]) > np.mean([-10 * math.log10(e) for e in (5e-4, 5e-3)])


def test_the_psnr_loss_adds_each_pairs_floor_so_a_pair_that_cannot_be_matched_weighs_less():
    task = _colorizer().task
    objective = Objective(task, None, TrainConfig(epochs=1, regression_loss="psnr"))
    before, after = torch.full((1, 1, 8, 8), 0.5), torch.full((1, 3, 8, 8), 0.5)
    y = _logits_for(torch.full((1, 2, 8, 8), 0.02)).requires_grad_()
    grads = []
    for f in (1e-4, 1e-2):
        y.grad = None
        objective.loss(y, before, after, torch.tensor([f])).backward()
        grads.append(y.grad.abs().sum().item())
    assert grads[0] > 10 * grads[1]


def test_a_pairs_floor_is_the_error_of_the_best_result_the_network_could_give(tmp_path):
    color = Image.open(make_image(tmp_path / "c.png", (96, 64))).convert("RGB")
    full = error_floor(_colorizer(work_long=96).task, out_stride=1)   # the network works at full size
    small = error_floor(_colorizer(work_long=32).task, out_stride=2)  # ... at a sixth of it
    # At full size the truth's own chroma gives the truth back, but for rounding (YCbCr in 8 bits).
    assert full(color.convert("L"), color) < (1.5 / 255) ** 2
    # Chroma finer than the output (the disc's edge) is lost to every prediction.
    assert small(color.convert("L"), color) > 20 * full(color.convert("L"), color)
    # A gray that disagrees with the truth's luminance by 6 levels of noise costs about that much.
    rng = np.random.default_rng(0)
    noisy = np.clip(np.asarray(color.convert("L"), dtype=float) + rng.normal(0, 6, (64, 96)), 0, 255)
    assert full(Image.fromarray(noisy.astype(np.uint8), "L"), color) == pytest.approx((6 / 255) ** 2, rel=0.3)


def test_the_tint_and_the_departures_from_it_get_gains_of_their_own():
    c = torch.stack([torch.full((4, 4), 0.05), torch.linspace(-0.1, 0.1, 16).view(4, 4)])[None]  # (1, 2, 4, 4)
    out = vivid(c, gain=1.5, tint_gain=1.2)
    mean = c.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(out.mean(dim=(2, 3), keepdim=True), mean * 1.2, atol=1e-6)
    assert torch.allclose(out - out.mean(dim=(2, 3), keepdim=True), (c - mean) * 1.5, atol=1e-6)
    assert torch.equal(vivid(c, 1, 1), c)


def test_a_model_saved_before_tint_gain_existed_decodes_as_it_did():
    task = _colorizer(gain=1.35).task                   # tint_gain absent: None
    assert task.cfg.tint_gain is None
    y = torch.randn(2, 2, 6, 6)
    plain = task.chroma(y, gain=1.0)
    assert torch.allclose(task.chroma(y), (plain * 1.35).clamp(-0.5, 0.5), atol=1e-6)
    split = _colorizer(gain=1.35, tint_gain=1.1).task
    assert not torch.allclose(split.chroma(y), task.chroma(y))
    with pytest.raises(ValueError, match="tint_gain"):
        TaskConfig("colorize", tint_gain=0)


def test_the_ab_loss_is_measured_in_the_lab_the_hue_metric_uses_and_prefers_the_median_hue():
    from unet.color import rgb_to_ab
    from unet.metrics import rgb_to_ab as metric_ab
    rgb = torch.rand(2, 3, 5, 7)
    ours = rgb_to_ab(rgb).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - metric_ab(rgb.permute(0, 2, 3, 1).double().numpy() * 255)).max() < 1e-3

    # Three pixels of one green, one of a red: the median (the green) beats the brown mean.
    task = _colorizer().task
    objective = Objective(task, None, TrainConfig(epochs=1, regression_loss="ab"))
    before = torch.full((1, 1, 2, 2), 0.5)
    truth = torch.tensor([[-0.15, 0.15], [-0.15, 0.2]])            # (Cb, Cr): green, red
    pixels = truth[[0, 0, 0, 1]].t().reshape(1, 2, 2, 2)
    after = torch.cat([before, pixels], 1)
    from unet.color import ycc_to_rgb
    after = ycc_to_rgb(after)
    median = truth[0][None, :, None, None].expand(1, 2, 2, 2)
    mean = pixels.mean((2, 3), keepdim=True).expand(1, 2, 2, 2)
    loss = {k: objective.loss(_logits_for(c.clone()), before, after).item() for k, c in
            (("median", median), ("mean", mean))}
    assert loss["median"] < loss["mean"]

    # Finite gradients on black and gray, where Lab's cube root is steepest.
    for level in (0.0, 0.5):
        y = _logits_for(torch.zeros(1, 2, 2, 2)).requires_grad_()
        objective.loss(y, torch.full((1, 1, 2, 2), level), torch.full((1, 3, 2, 2), level)).backward()
        assert torch.isfinite(y.grad).all()
