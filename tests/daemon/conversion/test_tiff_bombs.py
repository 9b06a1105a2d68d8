"""Hostile TIFFs through a real service: a chain of pages that loops back, a page bomb (60,000 tiny pages
in 7 MB), and a decode past its deadline each end as a quarantined input with its reason, while the
files beside them are converted."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tifffile

from daemon.core.config import load_config
from daemon.core.names import reason_name
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.service import Service, services, wait_for
from unet.imageerror import ImageError
from unet.images import open_image
from unet.tiffchain import page_offsets

QUICK = "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n[status]\ninterval_seconds = 0.5\n"


def circular(pages: int = 2) -> bytes:
    """A small TIFF of `pages` gray pages whose last page's next-IFD offset points back to the first."""
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        for i in range(pages):
            tif.write(np.full((8, 8), 40 * i, np.uint8), photometric="minisblack", contiguous=False)
    b = bytearray(buf.getvalue())
    first = at = struct.unpack_from("<I", b, 4)[0]
    while True:
        nxt_at = at + 2 + 12 * struct.unpack_from("<H", b, at)[0]
        nxt = struct.unpack_from("<I", b, nxt_at)[0]
        if not nxt:
            struct.pack_into("<I", b, nxt_at, first)
            return bytes(b)
        at = nxt


def many_pages(n: int) -> bytes:
    """A classic little-endian TIFF of n 1x1 gray pages, 115 bytes each (60,000 of them: 6.9 MB)."""
    entries = 9
    ifd_len = 2 + 12 * entries + 4
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for i in range(n):
        at = len(out)
        pixel = at + ifd_len
        nxt = pixel + 1 if i < n - 1 else 0
        tags = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, pixel), (277, 3, 1),
                (278, 3, 1), (279, 4, 1)]
        out += struct.pack("<H", entries)
        for tag, kind, value in tags:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                        else struct.pack("<I", value))
        out += struct.pack("<I", nxt) + bytes([(i * 7) % 256])
    return bytes(out)


def test_a_circular_chain_and_a_page_bomb_are_refused_when_their_pages_are_listed():
    with pytest.raises(ImageError, match="loops back"):
        open_image(io.BytesIO(circular()))
    with pytest.raises(ImageError, match="more than 1000 pages"):
        open_image(io.BytesIO(many_pages(60_000)), max_pages=1000)
    pages = page_offsets(io.BytesIO(many_pages(300)), max_pages=300)
    assert len(pages) == 300
    last = open_image(io.BytesIO(many_pages(300)), page=pages[-1])   # read in one step, not by walking
    assert np.asarray(last.image).tolist() == [[(299 * 7) % 256]]


def _run(tmp_path, tiny_models, service_env, extra: str, files: dict[str, bytes], expect) -> tuple:
    path = write_config(tmp_path, {"colorize": tiny_models["colorize"]}, QUICK + extra)
    cfg = load_config(path)
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            (tmp_path / name).rename(cfg.inbox("colorize") / name)
        wait_for(lambda: expect(cfg), 120, "every file's outcome", log=s.log)
        assert s.stop() == 0
        return cfg, s.log()


def _png(tmp_path, size=(48, 32), seed=1) -> bytes:
    make_image(tmp_path / "p.png", size=size, mode="L", seed=seed)
    return (tmp_path / "p.png").read_bytes()


def _reason(cfg, name: str) -> str:
    return (cfg.failed("colorize") / reason_name(name)).read_text()


def test_circular_tiffs_and_a_page_bomb_are_quarantined_and_the_rest_converted(tmp_path, tiny_models,
                                                                               service_env):
    files = {"loop1_before.tif": circular(2), "loop2_before.tif": circular(3),
             "bomb_before.tif": many_pages(60_000), "fine_before.png": _png(tmp_path),
             "book_before.tif": many_pages(5)}
    assert len(files["loop1_before.tif"]) < 1000 and len(files["bomb_before.tif"]) < 7_000_000

    def done(cfg):
        failed, out = cfg.failed("colorize"), cfg.outbox("colorize")
        return all((failed / reason_name(n)).exists() for n in ("loop1_before.tif", "loop2_before.tif",
                                                                "bomb_before.tif")) \
            and {"fine_after.png", "book_after.tif"} <= {p.name for p in out.iterdir()}

    cfg, log = _run(tmp_path, tiny_models, service_env, "[runtime]\ndecode_threads = 1\n", files, done)
    assert "loops back" in _reason(cfg, "loop1_before.tif") and "loops back" in _reason(cfg, "loop2_before.tif")
    assert "more than 1000 pages" in _reason(cfg, "bomb_before.tif") and "max_pages" in _reason(cfg, "bomb_before.tif")
    with tifffile.TiffFile(cfg.outbox("colorize") / "book_after.tif") as tif:
        assert len(tif.pages) == 5
    assert list(cfg.state_dir("work", "colorize").iterdir()) == []


def test_a_decode_past_its_deadline_fails_its_file_and_frees_its_slot(tmp_path, tiny_models, service_env):
    # A deadline of a millisecond: no 30 MP PNG decodes that fast, on any machine; one decode thread, so
    # the second and third files are decoded only if the first's slot and thread were given back.
    big = {f"big{i}_before.png": _png(tmp_path, size=(6000, 5000), seed=i) for i in range(3)}

    def done(cfg):
        return all((cfg.failed("colorize") / reason_name(n)).exists() for n in big)

    cfg, log = _run(tmp_path, tiny_models, service_env,
                    "[runtime]\ndecode_threads = 1\n[limits]\ndecode_seconds = 0.001\n", big, done)
    for name in big:
        assert "decoding took longer than 0.001 s" in _reason(cfg, name)
    assert list(cfg.state_dir("work", "colorize").iterdir()) == []
