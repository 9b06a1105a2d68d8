"""Thumbnails and browser copies of files Pillow cannot open itself (read as the service reads them)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from daemon.conversion.encode16 import encode16
from daemon.web.ondisk import Opened
from daemon.web.thumbs import Unreadable, thumbnail, viewable
from tests.support.deep import gray16


def _opened(path) -> Opened:
    st = path.stat()
    return Opened(os.open(path, os.O_RDONLY), st.st_size, path.name, st.st_mtime)


def test_a_sixteen_bit_gray_and_alpha_tiff_gets_a_thumbnail_and_a_browser_copy(tmp_path):
    g = gray16((60, 40))
    path = tmp_path / "ga_after.tif"
    path.write_bytes(encode16(np.dstack([g, np.full_like(g, 50000)]), "TIFF", None, None))
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(path)
    cache = tmp_path / "thumbs"
    cache.mkdir()
    with Image.open(thumbnail(cache, "k", _opened(path), 10**8)) as im:
        assert im.format == "JPEG" and im.size == (60, 40)
        assert abs(np.asarray(im.convert("L"), float).mean() - (g >> 8).mean()) < 3   # the picture, not black
    copy, media = viewable(cache, "k", _opened(path), 10**8)
    assert media == "image/png" and Image.open(copy).size == (60, 40)
    with pytest.raises(Unreadable):
        thumbnail(cache, "big", _opened(path), 60 * 40 - 1)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_broken_tiff_is_unreadable_not_an_error_page(tmp_path):
    path = tmp_path / "bad_after.tif"
    path.write_bytes(b"II*\0" + b"\xff" * 60)
    with pytest.raises(Unreadable):
        thumbnail(tmp_path, "bad", _opened(path), 10**8)


def test_a_sixteen_bit_min_is_white_tiff_is_not_shown_as_a_negative(tmp_path):
    import tifffile

    g = gray16((60, 40))   # dark at the top left, light at the bottom right, as stored
    path = tmp_path / "w_before.tif"
    tifffile.imwrite(path, g, photometric="miniswhite")
    with Image.open(thumbnail(tmp_path, "w", _opened(path), 10**8)) as im:
        a = np.asarray(im.convert("L"), float)
    assert a[:5, :5].mean() > a[-5:, -5:].mean() + 100   # shown as min-is-white means: light where stored low
