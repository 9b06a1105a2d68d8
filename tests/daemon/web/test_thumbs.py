"""Thumbnails and browser copies of files Pillow cannot open itself (read as the service reads them)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from daemon.conversion.converting.budget import MemoryBudget
from daemon.conversion.converting.encode16 import encode16
from daemon.web.ondisk import Opened
from daemon.web.thumbs import PER_PIXEL, Unreadable, thumbnail, viewable
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


class _Counted(MemoryBudget):
    """The real budget, counting the decodes that took from it."""

    def __init__(self, limit: int):
        super().__init__(limit)
        self.takes = 0

    def take(self, n: int, timeout=None) -> bool:
        self.takes += 1
        return super().take(n, timeout)


def _tiff(path, size=(600, 400), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, compression="tiff_lzw")
    return path


def _together(n: int, fn) -> list:
    """fn(i) on n threads at once; their results (an exception raised is re-raised)."""
    out = [None] * n
    start = threading.Barrier(n)

    def run(i):
        start.wait()
        out[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_picture_asked_for_by_many_at_once_is_decoded_once_within_the_budget(tmp_path):
    path = _tiff(tmp_path / "big_after.tif")
    budget = _Counted(1 << 40)
    cache = tmp_path / "full"
    cache.mkdir()
    got = _together(16, lambda i: viewable(cache, "same", _opened(path), 10**8, budget))
    assert budget.takes == 1 and budget.used == 0, "one decode for sixteen asks, its memory given back"
    assert {g for g, _ in got} == {cache / "same.png"}
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    _together(16, lambda i: thumbnail(thumbs, "same", _opened(path), 10**8, budget))
    assert budget.takes == 2 and budget.peak == 600 * 400 * PER_PIXEL + path.stat().st_size + (1 << 20)


def test_pictures_of_many_files_at_once_stay_within_the_budget(tmp_path):
    paths = [_tiff(tmp_path / f"p{i}_after.tif", seed=i) for i in range(8)]
    one = 600 * 400 * PER_PIXEL + max(p.stat().st_size for p in paths) + (1 << 20)
    budget = _Counted(2 * one)     # room for two decodes at a time
    cache = tmp_path / "full"
    cache.mkdir()
    _together(8, lambda i: viewable(cache, f"k{i}", _opened(paths[i]), 10**8, budget))
    assert budget.takes == 8 and 0 < budget.peak <= 2 * one and budget.used == 0
    assert len(list(cache.glob("*.png"))) == 8


def test_a_jpeg_thumbnail_is_decoded_at_a_reduced_size(tmp_path):
    path = tmp_path / "photo_after.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1600, 2400, 3), dtype=np.uint8)).save(path)
    budget = _Counted(1 << 40)
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    with Image.open(thumbnail(thumbs, "j", _opened(path), 10**8, budget)) as im:
        assert max(im.size) == 320
    reduced = (2400 // 4) * (1600 // 4) * PER_PIXEL   # a quarter of each side, at most
    assert budget.peak <= reduced + path.stat().st_size + (1 << 20)


def test_a_tiff_thumbnail_is_read_a_strip_at_a_time_and_shows_the_picture(tmp_path):
    import tifffile

    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.dstack([xx * 255 // w, yy * 255 // h, np.full((h, w), 90)]).astype(np.uint8)
    path = tmp_path / "scan_after.tif"
    tifffile.imwrite(path, rgb, compression="zlib", rowsperstrip=32)
    budget = _Counted(1 << 40)
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    with Image.open(thumbnail(thumbs, "t", _opened(path), 10**8, budget)) as im:
        assert im.size == (320, 240)
        small = np.asarray(im.resize((w // 100, h // 100)), float)
    expect = np.asarray(Image.fromarray(rgb).resize((w // 100, h // 100), Image.Resampling.BOX), float)
    assert np.abs(small - expect).mean() < 4, "the picture, the right way round"
    assert budget.peak < w * h * 3, "less than the decoded picture, let alone its copies"
