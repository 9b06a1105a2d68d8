"""encode(): results as their extension wants them, with the source's profile and EXIF."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from daemon.conversion.encode import encode, takes_ycc
from unet.images import Plain


def _ycc(size=(97, 61)) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [(xx * 255 // max(w - 1, 1)), 128 + 40 * np.sin(yy / 7.0), 128 - 30 * np.cos(xx / 5.0)]
    return Image.merge("YCbCr", [Image.fromarray(p.astype(np.uint8), "L") for p in planes])


def _source(image: Image.Image) -> Plain:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010E] = "plate 12"  # ImageDescription
    return Plain(image, None, "L", "JPEG", icc_profile=srgb, exif=exif.tobytes())


def test_only_jpeg_takes_a_ycbcr_result_as_it_is():
    assert takes_ycc(".jpg") and takes_ycc(".JPEG")
    assert not any(takes_ycc(e) for e in (".png", ".webp", ".tif", ".bmp"))


def test_a_ycbcr_result_becomes_a_jpeg_with_half_resolution_chroma_profile_and_exif():
    im = _ycc()
    data = encode(im, ".jpg", 92, _source(im.getchannel("Y")))
    out = Image.open(io.BytesIO(data))
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == im.size
    assert [layer[1:3] for layer in out.layer] == [(2, 2), (1, 1), (1, 1)]  # 4:2:0
    assert out.info.get("icc_profile") and out.getexif()[0x010E] == "plate 12"
    # It decodes to what the same picture encoded from RGB does.
    via_rgb = Image.open(io.BytesIO(encode(im.convert("RGB"), ".jpg", 92)))
    diff = np.abs(np.asarray(out, dtype=float) - np.asarray(via_rgb, dtype=float))
    assert diff.mean() < 1.5


@pytest.mark.parametrize("ext", [".png", ".webp", ".tif", ".bmp"])
def test_a_ycbcr_result_is_written_as_rgb_where_the_format_wants_it(ext):
    im = _ycc()
    out = Image.open(io.BytesIO(encode(im, ext, 100, _source(im.getchannel("Y")))))
    assert out.mode == "RGB" and out.size == im.size
    if ext in (".png", ".tif", ".bmp"):   # lossless: exactly the RGB picture
        assert np.array_equal(np.asarray(out), np.asarray(im.convert("RGB")))


def test_encoding_works_without_in_memory_files(monkeypatch):
    im = _ycc().convert("RGB")
    expected = encode(im, ".png", 92)
    monkeypatch.delattr(os, "memfd_create", raising=False)   # other systems: an anonymous temporary file
    assert encode(im, ".png", 92) == expected
