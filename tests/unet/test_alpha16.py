"""16-bit inputs with transparency keep every sample, and TIFFs that Pillow cannot open are read by tifffile."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from daemon.conversion.converting.encode import encode
from daemon.conversion.converting.encode16 import encode16
from tests.support.deep import color16, gray16, png16, read_deep
from unet.deepread import is_deep, tiff_alone_header
from unet.images import ImageError, open_image


def _alpha(size=(40, 24)) -> np.ndarray:
    """(H, W) uint16: opaque in the middle, fading to clear at the edges, with values between 8-bit steps."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    edge = np.minimum.reduce([xx, yy, w - 1 - xx, h - 1 - yy]) / 6.0
    return ((65535 * np.clip(edge, 0, 1)).astype(np.int64) | 0x0101 * (edge < 1)).astype(np.uint16)


def _files(tmp_path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (the color or gray samples, the alpha) of 16-bit files with transparency, as users make them."""
    rgb, gray, alpha = color16((40, 24)), gray16((40, 24), 7), _alpha()
    made = {
        "rgba.png": (encode16(np.dstack([rgb, alpha]), "PNG", None, None), rgb, alpha),
        "ga.png": (encode16(np.dstack([gray, alpha]), "PNG", None, None), gray, alpha),
        "rgba.tif": (encode16(np.dstack([rgb, alpha]), "TIFF", None, None), rgb, alpha),
        "ga.tif": (encode16(np.dstack([gray, alpha]), "TIFF", None, None), gray, alpha),   # Pillow cannot open it
    }
    # a 16-bit RGB PNG with a transparent color (its tRNS chunk): libpng makes it an alpha band
    clear = np.where((rgb == rgb[0, 0]).all(-1), 0, 65535).astype(np.uint16)
    made["trns.png"] = (png16(rgb, chunks=((b"tRNS", rgb[0, 0].astype(">u2").tobytes()),)), rgb, clear)
    out = {}
    for name, (data, samples, a) in made.items():
        (tmp_path / name).write_bytes(data)
        out[name] = samples, a
    return out


def test_a_sixteen_bit_input_with_alpha_keeps_its_samples_and_its_alpha(tmp_path):
    for name, (samples, alpha) in _files(tmp_path).items():
        p = open_image(tmp_path / name)
        assert p.deep is not None and np.array_equal(p.deep, samples), name
        assert p.deep_alpha is not None and np.array_equal(p.deep_alpha, alpha), name
        # the 8-bit copy the network sees, and the 8-bit alpha an 8-bit result keeps: the high bytes
        assert np.array_equal(np.asarray(p.image), (samples >> 8).astype(np.uint8)), name
        assert p.alpha is not None and np.array_equal(np.asarray(p.alpha), (alpha >> 8).astype(np.uint8)), name
        if name != "ga.tif":
            with Image.open(tmp_path / name) as im:
                assert is_deep(im), name   # the memory budget counts the samples it keeps
    assert tiff_alone_header(tmp_path / "ga.tif") == (40, 24, "LA", True)
    assert tiff_alone_header(tmp_path / "rgba.png") is None


def test_an_opaque_alpha_band_is_not_carried(tmp_path):
    rgb = color16((40, 24))
    (tmp_path / "o.png").write_bytes(encode16(np.dstack([rgb, np.full(rgb.shape[:2], 65535, np.uint16)]), "PNG",
                                              None, None))
    p = open_image(tmp_path / "o.png")
    assert np.array_equal(p.deep, rgb) and p.deep_alpha is None and p.alpha is None


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_a_result_carries_the_sixteen_bit_alpha_and_an_eight_bit_one_its_high_bytes(tmp_path, ext):
    files = _files(tmp_path)
    for name in (f"rgba.{ext}", f"ga.{ext}"):
        samples, alpha = files[name]
        p = open_image(tmp_path / name)
        (tmp_path / f"out.{ext}").write_bytes(encode(p.deep, "." + ext, 90, p))
        back = read_deep(tmp_path / f"out.{ext}")
        assert back.dtype == np.uint16 and back.shape == (24, 40, 2 if samples.ndim == 2 else 4), name
        assert np.array_equal(back[..., 0] if samples.ndim == 2 else back[..., :3], samples), name
        assert np.array_equal(back[..., -1], alpha), name


@pytest.mark.parametrize("compression", ["jpeg2000", "jpegxl", "lerc", "jpeg12"])
def test_a_tiff_pillow_cannot_open_is_read_by_tifffile(tmp_path, compression):
    """JPEG 2000, JPEG XL and LERC TIFFs, and a 12-bit JPEG one (scaled to 16 bits), which Pillow refuses."""
    rgb = color16((40, 24))
    if compression == "jpeg12":
        tifffile.imwrite(tmp_path / "c.tif", rgb >> 4, photometric="rgb", compression="jpeg",
                         compressionargs={"bitspersample": 12})
        expected, tolerance = rgb, 2000     # lossy: within a few 8-bit levels of the smooth picture
    else:
        tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression=compression)
        expected, tolerance = rgb, 0
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(tmp_path / "c.tif")
    p = open_image(tmp_path / "c.tif")
    assert p.format == "TIFF" and p.image.mode == "RGB" and p.deep is not None
    assert np.abs(p.deep.astype(int) - expected).max() <= tolerance
    assert np.abs(np.asarray(p.image).astype(int) - (expected >> 8)).max() <= tolerance // 256 + 1


def test_a_tiff_read_by_tifffile_is_checked_for_size_before_it_is_decoded_and_turned_upright(tmp_path):
    rgb = color16((40, 24))
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression="jpeg2000",
                     extratags=[(274, "H", 1, 6, True)])
    with pytest.raises(ImageError, match="megapixels, over the limit"):
        open_image(tmp_path / "c.tif", max_pixels=40 * 24 - 1)
    p = open_image(tmp_path / "c.tif")
    assert p.image.size == (24, 40) and np.array_equal(p.deep, np.rot90(rgb, -1))


def test_a_premultiplied_or_min_is_white_tiff_read_by_tifffile_comes_out_as_pillow_would_show_it(tmp_path):
    gray, alpha = gray16((40, 24)), _alpha()
    premultiplied = np.rint(gray.astype(np.float64) * alpha / 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", np.dstack([premultiplied, alpha]), photometric="minisblack",
                     extrasamples=[1])
    p = open_image(tmp_path / "p.tif")
    opaque = alpha > 60000
    assert np.abs(p.deep.astype(int) - gray)[opaque].max() <= 2 and np.array_equal(p.deep_alpha, alpha)
    tifffile.imwrite(tmp_path / "w.tif", np.dstack([gray, alpha]), photometric="miniswhite", extrasamples=[2])
    assert np.array_equal(open_image(tmp_path / "w.tif").deep, 65535 - gray)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_what_tifffile_cannot_read_either_gives_a_clear_error(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\0" + b"\xff" * 60)
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 8, 3), np.float32), photometric="rgb",
                     compression="lerc")
    with pytest.raises(ImageError, match="cannot decode image: a TIFF that neither Pillow nor tifffile can read"):
        open_image(tmp_path / "bad.tif")
    with pytest.raises(ImageError, match="float32 samples a pixel.*not read here"):
        open_image(tmp_path / "float.tif")


def test_a_sixteen_bit_min_is_white_tiff_is_not_read_as_a_negative(tmp_path):
    """Pillow inverts an 8-bit min-is-white TIFF but hands a 16-bit one's samples over as stored."""
    gray = gray16((40, 24))
    tifffile.imwrite(tmp_path / "w.tif", gray, photometric="miniswhite")
    tifffile.imwrite(tmp_path / "w8.tif", (gray >> 8).astype(np.uint8), photometric="miniswhite")
    p = open_image(tmp_path / "w.tif")
    assert np.array_equal(p.deep, 65535 - gray)
    eight = np.asarray(open_image(tmp_path / "w8.tif").image).astype(int)
    assert np.abs(np.asarray(p.image).astype(int) - eight).max() <= 1   # as the 8-bit one is shown
