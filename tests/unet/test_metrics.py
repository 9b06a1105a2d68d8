"""PSNR and colorfulness behave as their definitions say."""

import math

from PIL import Image

from unet.metrics import colorfulness, psnr, tint


def test_psnr_of_identical_images_is_infinite_and_falls_with_error():
    a = Image.new("RGB", (8, 8), (100, 120, 140))
    assert psnr(a, a) == math.inf
    b = Image.new("RGB", (8, 8), (110, 120, 140))
    c = Image.new("RGB", (8, 8), (130, 120, 140))
    assert psnr(b, a) > psnr(c, a)
    # one channel off by 10 of 255: mse = (10/255)^2 / 3
    assert abs(psnr(b, a) - 10 * math.log10(3 / (10 / 255) ** 2)) < 1e-9


def test_colorfulness_is_zero_for_gray_and_grows_with_saturation():
    gray = Image.linear_gradient("L").convert("RGB")
    assert colorfulness(gray) == 0
    dull = tint(Image.linear_gradient("L"), 5, 5)
    vivid = tint(Image.linear_gradient("L"), 30, 30)
    assert 0 < colorfulness(dull) < colorfulness(vivid)


def test_gray_truth_is_compared_as_gray():
    truth = Image.new("L", (4, 4), 100)
    assert psnr(Image.new("RGB", (4, 4), (100, 100, 100)), truth) == math.inf
