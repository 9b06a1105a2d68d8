"""The Predictor: images of any size and mode in, images of the same size out."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support.images import make_image
from unet import Predictor, load_model, open_image
from unet.images import plain


@pytest.fixture(scope="module")
def colorizer(tiny_models):
    return Predictor(tiny_models["colorize"], device="cpu", max_batch=4)


@pytest.fixture(scope="module")
def reverser(tiny_models):
    return Predictor(tiny_models["reverse"], device="cpu", max_batch=4)


@pytest.mark.parametrize("size", [(1, 1), (3, 200), (200, 3), (97, 61), (640, 480)])
def test_output_has_the_input_size(colorizer, reverser, size):
    im = Image.new("L", size, 128)
    assert colorizer.predict([im])[0].size == size
    assert reverser.predict([im.convert("RGB")])[0].size == size


def test_colorize_keeps_the_inputs_own_luminance(colorizer, tmp_path):
    gray = make_image(tmp_path / "g.png", (301, 157), "L")
    im = Image.open(gray)
    out = colorizer.predict([im])[0]
    assert out.mode == "RGB"
    diff = np.abs(np.asarray(out.convert("L"), dtype=float) - np.asarray(im, dtype=float))
    assert diff.mean() < 2.0


def test_a_colorize_result_for_a_jpeg_is_ycbcr_with_the_inputs_luminance_exactly(colorizer, tmp_path):
    im = Image.open(make_image(tmp_path / "g.png", (301, 157), "L"))
    item = colorizer.prepare(im)
    [y] = colorizer.run([item])
    ycc, rgb = colorizer.finish(item, y, ycc=True), colorizer.finish(item, y)
    assert ycc.mode == "YCbCr" and ycc.size == im.size and rgb.mode == "RGB"
    assert np.array_equal(np.asarray(ycc.getchannel("Y")), np.asarray(im))
    # Its chroma is the RGB result's at half resolution, as a JPEG stores it (the RGB one's round trip
    # through 8-bit RGB costs it up to a level).
    half = ((im.width + 1) // 2, (im.height + 1) // 2)
    for band in ("Cb", "Cr"):
        a = np.asarray(ycc.getchannel(band).resize(half, Image.Resampling.BOX), dtype=float)
        b = np.asarray(rgb.convert("YCbCr").getchannel(band).resize(half, Image.Resampling.BOX), dtype=float)
        assert np.abs(a - b).mean() < 1.5
    # With alpha to keep there is no YCbCr image: the result is RGBA as before.
    la = plain(Image.merge("LA", (im, Image.new("L", im.size, 200))))
    assert colorizer.finish(colorizer.prepare(la), y, ycc=True).mode == "RGBA"


def test_reverse_gives_gray_of_the_same_size(reverser, tmp_path):
    im = Image.open(make_image(tmp_path / "c.jpg", (123, 45)))
    out = reverser.predict([im])[0]
    assert out.mode == "L" and out.size == (123, 45)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(1, 1), (250, 1), (3, 200), (97, 61), (1200, 700)])
def test_a_translate_result_applies_the_transform_the_training_applies(size, channels):
    """finish() upsamples the coefficients strip by strip; training's apply() upsamples them whole."""
    from unet import TaskConfig, UNetConfig, new_model

    task = new_model(TaskConfig("translate", work_long=64, out_channels=channels),
                     UNetConfig(widths=(8, 16), middle_blocks=1)).task
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    item = task.prepare(plain(rgb))
    h, w = item.key
    y = 0.3 * torch.randn((task.out_channels, h, w), generator=torch.Generator().manual_seed(0))
    out = np.asarray(task.finish(y, item.ctx, rows_per_strip=64), dtype=float)
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    ref = (task.apply(y[None], x)[0] * 255).round().clamp(0, 255).numpy()
    ref = ref[0] if channels == 1 else ref.transpose(1, 2, 0)
    assert out.shape == ref.shape and np.abs(out - ref).max() <= 1   # the same up to rounding


def test_mixed_sizes_and_modes_in_one_call(colorizer, tmp_path):
    ims = [Image.open(make_image(tmp_path / f"{i}.png", s, m))
           for i, (s, m) in enumerate([((64, 64), "L"), ((80, 30), "RGB"), ((64, 64), "RGBA"), ((10, 90), "P")])]
    outs = colorizer.predict(ims)
    assert [o.size for o in outs] == [im.size for im in ims]


def test_alpha_survives(colorizer, tmp_path):
    im = Image.new("LA", (40, 30), (100, 255))
    im.putpixel((0, 0), (100, 0))
    out = colorizer.predict([plain(im)])[0]
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0 and out.getpixel((20, 20))[3] == 255


def test_batched_and_single_runs_agree(colorizer, tmp_path):
    ims = [Image.open(make_image(tmp_path / f"{i}.png", (64, 48), "L", seed=i)) for i in range(5)]
    together = colorizer.predict(ims)
    alone = [colorizer.predict([im])[0] for im in ims]
    for a, b in zip(together, alone):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_run_refuses_items_of_different_working_sizes(colorizer):
    a = colorizer.prepare(Image.new("L", (64, 64)))
    b = colorizer.prepare(Image.new("L", (64, 16)))
    with pytest.raises(ValueError, match="one working size"):
        colorizer.run([a, b])


def test_every_input_mode_converts(colorizer, reverser, tmp_path):
    for mode, ext in (("L", "png"), ("LA", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("P", "png"),
                      ("CMYK", "jpg"), ("1", "bmp")):
        p = open_image(make_image(tmp_path / f"m_{mode}.{ext}", (50, 70), mode))
        for pred in (colorizer, reverser):
            assert pred.predict([p])[0].size == (50, 70)
    a = (np.arange(50 * 70).reshape(70, 50) * 13 % 65536).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert colorizer.predict([open_image(tmp_path / "deep.png")])[0].size == (50, 70)


def test_predictor_loads_from_a_folder_and_knows_its_version(tiny_models):
    p = Predictor(tiny_models["colorize"], device="cpu")
    assert p.version == 1 and p.device.type == "cpu"
    assert load_model(tiny_models["colorize"]).task.name == "colorize"


def test_asking_for_cuda_without_it_says_so(tiny_models):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        Predictor(tiny_models["colorize"], device="cuda")


def _sixteen_bit(tmp_path, name, array):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return open_image(path)


def test_a_sixteen_bit_gray_input_colorizes_to_sixteen_bit_rgb_with_its_own_luminance(colorizer, tmp_path):
    from tests.support.deep import gray16, luminance16

    g = gray16((301, 157))
    item = colorizer.prepare(_sixteen_bit(tmp_path, "g.png", g))
    [y] = colorizer.run([item])
    out = colorizer.finish(item, y, deep=True)
    assert out.dtype == np.uint16 and out.shape == (157, 301, 3)
    assert np.abs(luminance16(out) - g).max() <= 1.0            # its own luminance, to a 16-bit level
    # The colors are the 8-bit result's, at 16 bits.
    eight = np.asarray(colorizer.finish(item, y), dtype=float)
    assert np.abs(out / 257.0 - eight).mean() < 1.0
    assert colorizer.finish(item, y).mode == "RGB"               # not asked for 16 bits: 8 as before


@pytest.mark.parametrize("channels", [1, 3])
def test_a_sixteen_bit_input_is_translated_in_float_to_sixteen_bits(tmp_path, channels):
    from tests.support.deep import gray16
    from unet import TaskConfig, UNetConfig, new_model

    task = new_model(TaskConfig("translate", work_long=64, out_channels=channels),
                     UNetConfig(widths=(8, 16), middle_blocks=1)).task
    g = gray16((97, 61))
    item = task.prepare(_sixteen_bit(tmp_path, "g.tif", g))
    h, w = item.key
    y = 0.3 * torch.randn((task.out_channels, h, w), generator=torch.Generator().manual_seed(0))
    out = task.finish(y, item.ctx, deep=True, rows_per_strip=16)
    x = torch.from_numpy(g.astype(np.float32) / 65535)[None, None].expand(1, 3, -1, -1)
    ref = (task.apply(y[None], x)[0] * 65535).round().clamp(0, 65535).numpy()
    ref = ref[0] if channels == 1 else ref.transpose(1, 2, 0)
    assert out.dtype == np.uint16 and out.shape == ref.shape and np.abs(out - ref).max() <= 1
