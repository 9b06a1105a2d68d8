"""The U-Net: any input size, shapes from the config, built by loops."""

import pytest
import torch

from unet.model import UNet, UNetConfig, count_parameters


@pytest.mark.parametrize("h,w", [(1, 1), (7, 13), (64, 96), (33, 250)])
@pytest.mark.parametrize("stride", [1, 2])
def test_any_size_in_gives_matching_size_out(h, w, stride):
    net = UNet(UNetConfig(in_channels=1, out_channels=5, widths=(4, 8, 16, 32), out_stride=stride)).eval()
    with torch.inference_mode():
        y = net(torch.randn(2, 1, h, w))
    assert y.shape == (2, 5, -(-h // stride), -(-w // stride))


def test_depth_and_width_come_from_the_config():
    small = UNet(UNetConfig(widths=(8, 16)))
    deep = UNet(UNetConfig(widths=(8, 16, 32, 64)))
    assert len(small.down) == 1 and len(deep.down) == 3
    assert len(deep.up) == 3
    assert count_parameters(deep) > count_parameters(small)
    assert len(UNet(UNetConfig(widths=(8, 16, 32, 64), out_stride=2)).up) == 2


def test_middle_blocks_and_norms():
    for norm in ("batch", "group", "none"):
        net = UNet(UNetConfig(widths=(8, 16), middle_blocks=3, norm=norm)).eval()
        assert net(torch.randn(1, 1, 20, 20)).shape == (1, 2, 20, 20)


@pytest.mark.parametrize("bad", [dict(widths=(8,)), dict(norm="layer"), dict(out_stride=4)])
def test_bad_config_is_refused_with_the_reason(bad):
    with pytest.raises(ValueError) as e:
        UNetConfig(**bad)
    assert list(bad)[0] in str(e.value)


def test_config_round_trips_through_a_dict():
    cfg = UNetConfig(in_channels=3, out_channels=12, widths=(8, 16, 32), middle_blocks=1, out_stride=2)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_a_side_head_reads_the_features_without_training_them():
    net = UNet(UNetConfig(in_channels=1, out_channels=7, widths=(4, 8), side_channels=5))
    x = torch.randn(2, 1, 16, 16)
    y = net(x)
    assert y.shape == (2, 7, 16, 16)
    y[:, :5].square().mean().backward()  # a loss on the side outputs only
    assert net.side.weight.grad is not None and net.side.weight.grad.abs().sum() > 0
    trunk = [p.grad for n, p in net.named_parameters() if not n.startswith("side")]
    assert all(g is None or g.abs().sum() == 0 for g in trunk), "the side head's loss must not move the trunk"
