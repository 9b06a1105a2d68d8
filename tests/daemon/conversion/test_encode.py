"""encode(): results as their extension wants them, with the source's profile and EXIF."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from daemon.conversion.converting.encode import encode, takes_ycc
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


def _profile(space: bytes, size: int = 0) -> bytes:
    """An ICC profile for a color space (b'RGB ' or b'GRAY'), padded to size bytes when given."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20] = space
    icc += b"\0" * max(0, size - len(icc))
    icc[0:4] = len(icc).to_bytes(4, "big")
    return bytes(icc)


def _gray_tiff(tmp_path, icc: bytes, size=(40, 30)):
    from unet.images import open_image

    path = tmp_path / "gray_before.tif"
    Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0]), "L").save(
        path, icc_profile=icc, description="plate 7")
    return open_image(path)


@pytest.mark.parametrize("ext", [".tif", ".jpg", ".png"])
def test_a_gray_profile_never_tags_a_color_result_even_through_the_tiff_tags(tmp_path, ext):
    src = _gray_tiff(tmp_path, _profile(b"GRAY"))
    color = _ycc(src.image.size).convert("RGB")
    color.info = dict(src.image.info)   # as a finished result has it: the source's info, its profile in it
    exif = Image.Exif()
    exif[0x010E], exif[34675] = "plate 7", _profile(b"GRAY")   # a profile among the tags, as TIFF tags come
    src.exif = exif.tobytes()
    out = Image.open(io.BytesIO(encode(color, ext, 92, src)))
    icc = out.info.get("icc_profile")
    assert icc is None or icc[16:20] == b"RGB "
    assert 34675 not in out.getexif() and out.mode == "RGB"
    assert out.getexif().get(0x010E) == "plate 7"   # the picture's own metadata still travels
    # A gray result keeps its gray profile.
    gray = Image.open(io.BytesIO(encode(src.image, ext, 92, src)))
    assert gray.info.get("icc_profile", b"")[16:20] == b"GRAY"


@pytest.mark.parametrize("ext", [".tif", ".jpg"])
def test_a_huge_profile_is_not_copied_into_the_result(tmp_path, ext):
    src = _gray_tiff(tmp_path, _profile(b"GRAY", 30_000_000), size=(16, 16))
    data = encode(src.image, ext, 92, src)
    assert len(data) < 100_000
    assert Image.open(io.BytesIO(data)).size == (16, 16)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_color_samples_are_written_at_sixteen_bits_with_profile_and_description(tmp_path, ext):
    from daemon.conversion.converting.encode import keeps_depth
    from tests.support.deep import gray16, read_deep

    rgb = np.stack([gray16((83, 41), s) for s in range(3)], -1)
    src = _source(Image.new("L", (83, 41)))
    path = tmp_path / f"out{ext}"
    path.write_bytes(encode(rgb, ext, 92, src))
    assert keeps_depth(ext) and not keeps_depth(".jpg")
    back = read_deep(path)
    assert back.dtype == np.uint16 and np.array_equal(back, rgb)   # every bit of every sample
    with Image.open(path) as im:   # a valid file that any viewer opens (Pillow shows it at 8 bits)
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), (rgb >> 8).astype(np.uint8))
        assert im.info.get("icc_profile", b"")[16:20] == b"RGB " and im.getexif().get(0x010E) == "plate 12"


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_sixteen_bit_gray_samples_are_written_as_sixteen_bit_gray_with_a_gray_profile(tmp_path, ext):
    from tests.support.deep import gray16

    g = gray16((50, 30))
    src = _source(Image.new("L", (50, 30)))
    src.icc_profile = _profile(b"GRAY")
    out = Image.open(io.BytesIO(encode(g, ext, 92, src)))
    assert out.mode == "I;16" and np.array_equal(np.asarray(out), g)
    assert out.info.get("icc_profile", b"")[16:20] == b"GRAY"
