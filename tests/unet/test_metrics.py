"""PSNR and colorfulness behave as their definitions say."""

import math

import pytest
from PIL import Image

from unet.metrics import ab_auc, colorfulness, psnr, rgb_to_ab, tint


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


def test_ab_is_cie_lab_as_scikit_image_computes_it():
    np = pytest.importorskip("numpy")
    color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.allclose(rgb_to_ab(rgb.astype(np.float64)), color.rgb2lab(rgb)[..., 1:], atol=1e-3)


def test_ab_auc_is_100_for_the_truth_and_low_for_gray_and_for_the_wrong_hue():
    truth = Image.merge("RGB", [Image.linear_gradient("L"), Image.new("L", (256, 256), 40),
                                Image.linear_gradient("L").rotate(90)])
    gray = truth.convert("L").convert("RGB")
    wrong = Image.merge("RGB", truth.split()[::-1])
    assert ab_auc([truth], [truth]) == 100.0
    assert ab_auc([gray], [truth]) < 90 and ab_auc([wrong], [truth]) < 90


def test_ab_auc_weighs_a_rare_color_as_much_as_a_common_one():
    # Mostly brown paper with a small red flower (1.5% of the pixels), and a result that misses the flower.
    paper, red = (150, 120, 90), (200, 30, 40)
    truth = Image.new("RGB", (192, 128), paper)
    truth.paste(red, (0, 0, 24, 16))
    flowerless = Image.new("RGB", (192, 128), paper)
    gray = truth.convert("L").convert("RGB")
    # Unweighted, missing the flower would cost about 1.5 points; weighted by rarity its bin counts as
    # much as the paper's, and missing it costs far more.
    assert ab_auc([gray], [truth]) < ab_auc([flowerless], [truth]) < 90
