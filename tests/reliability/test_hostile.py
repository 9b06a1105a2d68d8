"""Hostile input: every odd, broken, huge or malicious thing a user can drop ends as a correct result or
as a quarantined input with a reason, and the service runs on throughout.

One service takes every case at once (they are dropped together, as a burst); each case is then its
own test, so a failure names the case. The service runs without root's power to ignore file
permissions (see tests/support/rig.py, without_file_permission_override), so an unreadable file is really unreadable.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.images import make_image
from tests.support.service import names
from tests.support.rig import Rig, poll, without_file_permission_override

NO_DAC = without_file_permission_override()
MAX_PIXELS = 1_000_000
LIMITS = f"[limits]\nmax_pixels = {MAX_PIXELS}\nmax_file_mb = 2\n[runtime]\nmax_batch = 4\n"


def _png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header says w x h pixels, with a few bytes of data behind it (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def _encoded(size=(80, 56), mode="L", fmt="PNG", seed=3, **kw) -> bytes:
    """A small picture with an asymmetric layout (so a wrong rotation shows), encoded as fmt."""
    buf = io.BytesIO()
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(xx / max(w, 1) * 3 + rng.uniform(0, 3))
    g = 127 + 120 * np.cos(yy / max(h, 1) * 2 + rng.uniform(0, 3))
    b = np.where(xx < w / 3, 220.0, 40.0)  # asymmetric: left third bright
    im = Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")
    im = im if mode == "RGB" else im.convert(mode)
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@dataclass
class Case:
    name: str                               # the name dropped into the inbox
    make: Callable[[Path, Path], None]      # make(path in the inbox, scratch folder)
    expect: str                             # output | failed | left (stays in the inbox) | gone (nowhere)
    output: str = ""                        # the expected result's name (output)
    size: tuple[int, int] | None = None     # the expected result's size (output)
    words: tuple[str, ...] = ()             # in the reason (failed)
    check: Callable[[Path, "Rig"], None] | None = None   # more checks on the result
    needs: str = ""                         # "no-dac": only honest when permissions bind the service


def _bytes(data: bytes, mode: int | None = None):
    def make(path: Path, scratch: Path) -> None:
        path.write_bytes(data)
        if mode is not None:
            os.chmod(path, mode)
    return make


def _image(**kw):
    return _bytes(_encoded(**kw))


def _truncated(fmt: str):
    data = _encoded((120, 90), "RGB", fmt)
    return _bytes(data[:len(data) // 2])


def _gray_alpha() -> bytes:
    """Gray with a real alpha band: opaque on the left, fading out to the right."""
    im = Image.open(io.BytesIO(_encoded((80, 56), "L", "PNG"))).convert("LA")
    im.putalpha(Image.linear_gradient("L").rotate(90).resize((80, 56)))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _cmyk() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(_encoded((72, 48), "RGB", "PNG"))).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def _palette_transparent() -> bytes:
    im = Image.open(io.BytesIO(_encoded((64, 48), "RGB", "PNG"))).convert("P", palette=Image.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.open(io.BytesIO(_encoded((50, 40), "RGB", "PNG", seed=s))).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _sixteen_bit() -> bytes:
    a = (np.linspace(0, 65535, 70 * 50).reshape(50, 70)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")  # mode I;16
    return buf.getvalue()


def _float_tiff() -> bytes:
    a = np.linspace(0, 1, 60 * 40, dtype=np.float32).reshape(40, 60)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "TIFF")  # mode F
    return buf.getvalue()


def _exif_rotated() -> bytes:
    """Stored 64 wide x 40 high, EXIF orientation 6: shown (and to be converted) 40 wide x 64 high."""
    im = Image.open(io.BytesIO(_encoded((64, 40), "L", "PNG")))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def _upright(out: Path, rig: Rig) -> None:
    src = Image.open(io.BytesIO(_exif_rotated()))
    right = ImageOps.exif_transpose(src).convert("L")
    wrong = right.rotate(180)
    with Image.open(out) as im:
        assert im.getexif().get(0x0112, 1) == 1, "the result must not ask viewers to rotate it again"
        lum = np.asarray(im.convert("L"), dtype=np.float32)
    d_right = np.abs(lum - np.asarray(right, dtype=np.float32)).mean()
    d_wrong = np.abs(lum - np.asarray(wrong, dtype=np.float32)).mean()
    assert d_right < 8 and d_right < d_wrong / 2, (d_right, d_wrong)


def _has_alpha(out: Path, rig: Rig) -> None:
    with Image.open(out) as im:   # a color palette picture is written through as it is (color_inputs = "keep")
        assert im.mode in ("RGBA", "LA") or "transparency" in im.info, f"the transparency was lost: {im.mode}"


def _colliding(path: Path, scratch: Path) -> None:
    existing = path.parent.parent.parent / "outbox" / "colorize" / "collide_after.png"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_bytes(b"the user's own file, which must never be overwritten")
    path.write_bytes(_encoded())


def _untouched_original(out: Path, rig: Rig) -> None:
    assert (rig.outbox() / "collide_after.png").read_bytes() == b"the user's own file, which must never be overwritten"


def _symlink(path: Path, scratch: Path) -> None:
    secret = scratch / "outside_secret.png"
    secret.write_bytes(_encoded(seed=9))
    os.symlink(secret, path)


def _fifo(path: Path, scratch: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path, scratch: Path) -> None:
    path.mkdir()
    (path / "inside_before.png").write_bytes(_encoded())


def _vanishing(path: Path, scratch: Path) -> None:
    path.write_bytes(_encoded())
    path.unlink()


LONG = "L" * (255 - len("_before.png")) + "_before.png"
ELF = Path("/bin/true").read_bytes()[:20000] if Path("/bin/true").exists() else b"\x7fELF" + b"\0" * 2000

CASES = [
    Case("zero_before.jpg", _bytes(b""), "failed", words=("decode",)),
    Case("truncated_before.jpg", _truncated("JPEG"), "failed", words=("truncated",)),
    Case("truncated_before.png", _truncated("PNG"), "failed", words=("decode",)),
    Case("text_before.jpg", _bytes(b"just some words, not a picture\n" * 20), "failed", words=("decode",)),
    Case("page_before.jpg", _bytes(b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>"),
         "failed", words=("decode",)),
    Case("program_before.jpg", _bytes(ELF, 0o755), "failed", words=("decode",)),
    Case("claims50k_before.png", _bytes(_png_claiming(50_000, 50_000)), "failed", words=("megapixels", "2500.0")),
    Case("toobig_before.png", _image(size=(1100, 1000)), "failed", words=("megapixels",)),
    Case("overfile_before.jpg", _bytes(os.urandom(2_200_000)), "failed", words=("max_file_mb",)),
    Case("thin_before.png", _image(size=(1, 10_000)), "output", "thin_after.png", (1, 10_000)),
    Case("wide_before.png", _image(size=(10_000, 1)), "output", "wide_after.png", (10_000, 1)),
    Case("dot_before.png", _image(size=(1, 1)), "output", "dot_after.png", (1, 1)),
    Case("deep16_before.png", _bytes(_sixteen_bit()), "output", "deep16_after.png", (70, 50)),
    Case("float_before.tif", _bytes(_float_tiff()), "output", "float_after.tif", (60, 40)),
    Case("bilevel_before.png", _image(mode="1"), "output", "bilevel_after.png", (80, 56)),
    Case("cmyk_before.jpg", _bytes(_cmyk()), "output", "cmyk_after.jpg", (72, 48)),
    Case("palette_before.png", _bytes(_palette_transparent()), "output", "palette_after.png", (64, 48),
         check=_has_alpha),
    Case("grayalpha_before.png", _bytes(_gray_alpha()), "output", "grayalpha_after.png", (80, 56), check=_has_alpha),
    Case("anim_before.gif", _bytes(_animated_gif()), "output", "anim_after.png", (50, 40)),
    Case("rotated_before.jpg", _bytes(_exif_rotated()), "output", "rotated_after.jpg", (40, 64), check=_upright),
    Case("pic_before.webp", _image(fmt="WEBP"), "output", "pic_after.webp", (80, 56)),
    Case("pic_before.tiff", _image(fmt="TIFF"), "output", "pic_after.tiff", (80, 56)),
    Case("pic_before.bmp", _image(fmt="BMP"), "output", "pic_after.bmp", (80, 56)),
    Case("SHOUT_before.JPG", _image(fmt="JPEG"), "output", "SHOUT_after.JPG", (80, 56)),
    Case("gif_inside_before.jpg", _image(mode="P", fmt="GIF"), "output", "gif_inside_after.jpg", (80, 56)),
    Case("trailing_before.jpg", _bytes(_encoded(fmt="JPEG") + b"\0garbage after the end of the image" * 10),
         "output", "trailing_after.jpg", (80, 56)),
    Case("with spaces in it_before.png", _image(), "output", "with spaces in it_after.png", (80, 56)),
    Case("ünïcødé 写真_before.png", _image(), "output", "ünïcødé 写真_after.png", (80, 56)),
    Case("new\nline_before.png", _image(), "output", "new\nline_after.png", (80, 56)),
    Case("-rf_before.png", _image(), "output", "-rf_after.png", (80, 56)),
    Case(LONG, _image(), "output", LONG.replace("_before", "_after"), (80, 56)),
    Case("collide_before.png", _colliding, "output", "collide_after-1.png", (80, 56), check=_untouched_original),
    Case("link_before.png", _symlink, "failed", words=("symbolic link",)),
    Case("fifo_before.png", _fifo, "failed", words=("not a regular file",)),
    Case("x_before.jpg", _directory, "left"),
    Case("_before.png", _image(), "left"),
    Case("vanish_before.png", _vanishing, "gone"),
    Case("noread_before.png", _bytes(_encoded(), 0o000), "failed", words=("Permission denied",), needs="no-dac"),
]

RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_models, module_env):
    root = tmp_path_factory.mktemp("hostile")
    rig = Rig(root, {"colorize": tiny_models["colorize"]}, module_env, LIMITS, prefix=NO_DAC or ())
    scratch = root / "scratch"
    scratch.mkdir()
    rig.t0 = time.monotonic()
    try:
        rig.start()
        for case in CASES:   # a burst: every case at once
            if case.needs == "no-dac" and NO_DAC is None:
                continue
            case.make(rig.inbox() / case.name, scratch)
        yield rig
    finally:
        rig.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name.replace("\n", "\\n")[:40] for c in CASES])
def test_hostile_input(hostile, case):
    rig = hostile
    if case.needs == "no-dac" and NO_DAC is None:
        pytest.skip("the service would run as root with the power to read any file (setpriv is missing), "
                    "so an unreadable file cannot be made honestly here")
    RESULTS[case.name] = "lost"
    inbox, out, failed = rig.inbox(), rig.outbox(), rig.failed()
    if case.expect == "output":
        quarantined = failed / case.name
        poll(lambda: os.path.lexists(out / case.output) or os.path.lexists(quarantined), 90,
             f"{case.name!r} converted", rig)
        assert not os.path.lexists(quarantined), f"quarantined instead of converted: {names(failed)}"
        with Image.open(out / case.output) as im:
            im.load()
            assert im.size == case.size
        if case.check:
            case.check(out / case.output, rig)
        assert not os.path.lexists(inbox / case.name)
    elif case.expect == "failed":
        reason = failed / (case.name + ".reason.txt")
        poll(reason.exists, 90, f"{case.name!r} quarantined with a reason", rig)
        text = reason.read_text(encoding="utf-8")
        assert os.path.lexists(failed / case.name), "the input itself sits beside its reason"
        assert "what went wrong" in text and "what to do" in text
        for w in case.words:
            assert w in text, f"{w!r} not in the reason:\n{text}"
        assert not [n for n in names(out) if n.startswith(case.name.rsplit("_before", 1)[0] + "_after")]
    elif case.expect == "left":
        time.sleep(3)  # a reconcile scan or two
        assert os.path.lexists(inbox / case.name), "left where it was"
        assert not os.path.lexists(failed / case.name)
    else:  # gone: the writer took it back; nothing to convert, nothing to quarantine
        time.sleep(1)
        stem = case.name.rsplit("_before", 1)[0]
        assert not [n for n in names(out) + names(failed) if n.startswith(stem)]
    RESULTS[case.name] = "ok"
    assert rig.alive()


def test_the_service_ran_on_throughout_and_still_converts(hostile, record):
    rig = hostile
    make_image(rig.inbox() / "after_all_before.png", (48, 32), "L")
    poll(lambda: (rig.outbox() / "after_all_after.png").exists(), 60, "a normal file converted", rig)
    assert rig.alive()
    log = rig.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    # A link's target outside the inbox was never moved, nor its content copied.
    assert (hostile.root / "scratch" / "outside_secret.png").exists()
    lost = sum(1 for v in RESULTS.values() if v != "ok")
    assert rig.stop() == 0
    record("hostile input, dropped as one burst", f"{len(RESULTS)} cases", lost, 0, rig.peak_kb,
           time.monotonic() - rig.t0)
    assert lost == 0, {k: v for k, v in RESULTS.items() if v != "ok"}
