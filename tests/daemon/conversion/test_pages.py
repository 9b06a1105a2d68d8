"""Multi-page TIFFs (a scanned book in one file), through a real service: every page converted into one
multi-page result, or the first page and a log line where the result cannot hold pages, or the whole file
quarantined when a page is broken."""

from __future__ import annotations

import numpy as np
import tifffile
from PIL import Image

from daemon.core.config import load_config
from daemon.core.names import reason_name
from tests.support.config import write_config
from tests.support.deep import gray16
from tests.support.service import Service, services, wait_for
from unet.deepread import tiff_pages
from unet.images import open_image

QUICK = "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n[status]\ninterval_seconds = 0.5\n"


def _book(path, pages: list[np.ndarray], thumbnail: bool = True) -> None:
    """A multi-page TIFF as a scanner writes it: the pages, and a small preview after the first (a
    reduced-resolution image, NewSubfileType 1), which is not a page."""
    with tifffile.TiffWriter(path) as tif:
        for i, page in enumerate(pages):
            tif.write(page, photometric="minisblack", compression="zlib")
            if i == 0 and thumbnail:
                tif.write(page[::4, ::4], photometric="minisblack", subfiletype=1)


def _pages(n: int, size=(40, 24), deep: bool = False) -> list[np.ndarray]:
    out = []
    for i in range(n):
        g = gray16(size, seed=i) // (1 + i)            # each page its own picture and brightness
        out.append(g if deep else (g >> 8).astype(np.uint8))
    return out


def test_a_tiff_s_pages_are_its_full_size_images_and_each_opens(tmp_path):
    pages = _pages(3)
    _book(tmp_path / "b.tif", pages)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        ifds = tuple(tif.pages[i].offset for i in (0, 2, 3))   # IFD 1 is the preview
    assert tiff_pages(tmp_path / "b.tif") == ifds
    assert open_image(tmp_path / "b.tif").pages == ifds
    for ifd, page in zip((0,) + ifds[1:], pages):
        assert np.array_equal(np.asarray(open_image(tmp_path / "b.tif", page=ifd).image), page)
    _book(tmp_path / "one.tif", _pages(1))
    assert open_image(tmp_path / "one.tif").pages == ()   # one page and its preview: one page


def _run(tmp_path, tiny_models, service_env, extra: str, files: dict[str, bytes], expect) -> tuple:
    """A real service on a colorize queue: files dropped in, wait for expect(cfg, log), give (cfg, log)."""
    path = write_config(tmp_path, {"colorize": tiny_models["colorize"]}, QUICK + extra)
    cfg = load_config(path)
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            (tmp_path / name).rename(cfg.inbox("colorize") / name)
        wait_for(lambda: expect(cfg, s.log()), 60, "the results and their log lines")
        return cfg, s.log()


def _bytes(tmp_path, pages, thumbnail=True) -> bytes:
    _book(tmp_path / "book.tmp", pages, thumbnail)
    return (tmp_path / "book.tmp").read_bytes()


def test_every_page_of_a_multi_page_tiff_is_converted_into_one_result(tmp_path, tiny_models, service_env):
    eight, deep = _pages(3), _pages(2, deep=True)
    book, deep_book, broken = _bytes(tmp_path, eight), _bytes(tmp_path, deep, False), _bytes(tmp_path, _pages(3))
    with tifffile.TiffFile(tmp_path / "book.tmp") as tif:
        offset = tif.pages[2].dataoffsets[0]     # the second page's pixels (IFD 2; IFD 1 is the preview)
    broken = broken[:offset] + b"\xff" * 40 + broken[offset + 40:]

    def finished(cfg, log):
        out, failed = cfg.outbox("colorize"), cfg.failed("colorize")
        return ({"book_after.tif", "deep_after.tif"} <= {p.name for p in out.iterdir()} if out.is_dir() else False) \
            and (failed / "broken_before.tif").exists() and log.count(" pages") >= 2

    cfg, log = _run(tmp_path, tiny_models, service_env, "",
                    {"book_before.tif": book, "deep_before.tif": deep_book, "broken_before.tif": broken}, finished)
    out = cfg.outbox("colorize")
    with tifffile.TiffFile(out / "book_after.tif") as tif:
        results = [p.asarray() for p in tif.pages]
    assert len(results) == 3, "every page, and not the preview"
    for page, result in zip(eight, results):
        assert result.shape == (24, 40, 3) and result.dtype == np.uint8
        luma = result.astype(float) @ [0.299, 0.587, 0.114]
        assert np.abs(luma - page).max() <= 2.0     # each page's own picture, colorized
    with tifffile.TiffFile(out / "deep_after.tif") as tif:
        results = [p.asarray() for p in tif.pages]
    assert len(results) == 2 and all(r.dtype == np.uint16 and r.shape == (24, 40, 3) for r in results)
    for page, result in zip(deep, results):
        assert np.abs(result.astype(float) @ [0.299, 0.587, 0.114] - page).max() <= 1.0   # 16 bits kept
    reason = (cfg.failed("colorize") / reason_name("broken_before.tif")).read_text()
    assert "page 2 of 3" in reason, reason
    assert "book_before.tif" in log and "all 3 pages" in log


def test_a_result_that_holds_one_page_gets_the_first_and_the_log_says_so(tmp_path, tiny_models, service_env):
    eight = _pages(3)
    cfg, log = _run(tmp_path, tiny_models, service_env, '[output]\nformat = "jpeg"\n',
                    {"book_before.tif": _bytes(tmp_path, eight)},
                    lambda cfg, log: "book_after.jpg in" in log)
    assert "only page 1 of its 3 was converted" in log and '[output] format = "tiff"' in log
    with Image.open(cfg.outbox("colorize") / "book_after.jpg") as im:
        assert im.format == "JPEG" and np.abs(np.asarray(im.convert("L"), float) - eight[0]).mean() < 3
