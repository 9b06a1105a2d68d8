"""Formats a user brings, through a real service: a HEIC and an AVIF scan convert; a format not read
is logged as a format, not blamed on the name."""

from __future__ import annotations

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from daemon.core.config import load_config
from tests.support.config import write_config
from tests.support.pairs import tiny_champion
from tests.support.service import Service, services, wait_for

QUICK = "[watch]\nsettle_seconds = 0.3\nrescan_seconds = 1\n[status]\ninterval_seconds = 0.5\n"


@pytest.fixture
def champion(tmp_path):
    return tiny_champion(tmp_path / "shipped" / "colorize")


def _gray(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    g = np.linspace(0, 255, 64 * 48).reshape(48, 64) * 0.7 + rng.integers(0, 60, (48, 64))
    return Image.fromarray(g.clip(0, 255).astype(np.uint8), "L").convert("RGB")


def test_heic_and_avif_scans_convert_and_an_unread_format_is_named(tmp_path, champion, service_env):
    path = write_config(tmp_path, {"colorize": champion}, QUICK)
    cfg = load_config(path)
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        inbox, out = cfg.inbox("colorize"), cfg.outbox("colorize")
        stage = tmp_path / "stage"
        stage.mkdir()
        pillow_heif.from_pillow(_gray(1)).save(stage / "IMG_0001_before.heic", quality=90)
        _gray(2).save(stage / "scan_before.avif", quality=90)
        (stage / "x_before.xyz").write_bytes(b"not an image we read")
        for f in sorted(stage.iterdir()):
            f.rename(inbox / f.name)
        wait_for(lambda: {"IMG_0001_after.jpg", "scan_after.jpg"} <= ({p.name for p in out.iterdir()} if out.is_dir() else set()), 30,
                 "the HEIC and AVIF results")
        for name in ("IMG_0001_after.jpg", "scan_after.jpg"):
            with Image.open(out / name) as im:
                assert im.format == "JPEG" and im.size == (64, 48) and im.mode == "RGB"
        wait_for(lambda: "the format .xyz is not one read here" in s.log(), 10, "the format line")
        line = next(ln for ln in s.log().splitlines() if "x_before.xyz" in ln)
        assert ".heic" in line and ".avif" in line and "the name is not" not in line
        assert (inbox / "x_before.xyz").exists()   # left where it is, nothing lost


def test_start_up_lines_name_paths_from_the_config_folder_and_fit_a_terminal(tmp_path, champion, service_env):
    path = write_config(tmp_path, {"colorize": champion}, QUICK + '[runtime]\nmax_batch = "auto"\n')
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        lines = [ln.split("queue colorize", 1)[1] for ln in s.log().splitlines() if "queue colorize" in ln]
        assert any(m == ": inbox/colorize -> outbox/colorize" for m in lines), lines
        assert any("batch size" in m and "(measured)" in m for m in lines), lines
        assert any(m.startswith(": images/s by size 1:") for m in lines), lines   # the figures, short
        for m in lines:
            assert str(tmp_path) not in m and len("queue colorize" + m) <= 100, m


def test_left_alone_is_logged_once_per_file_across_restarts(tmp_path, champion, service_env):
    path = write_config(tmp_path, {"colorize": champion}, QUICK)
    inbox = load_config(path).inbox("colorize")
    with services() as running:
        first = Service(path, service_env, tmp_path / "first.log")
        running.append(first)
        first.wait_ready()
        (inbox / "grandma.jpg").write_bytes(b"a wrong name")
        wait_for(lambda: "grandma.jpg: left alone" in first.log(), 10, "the left-alone line")
        first.stop()
        second = Service(path, service_env, tmp_path / "second.log")
        running.append(second)
        second.wait_ready()
        (inbox / "uncle.jpg").write_bytes(b"another wrong name")
        wait_for(lambda: "uncle.jpg: left alone" in second.log(), 10, "the new file's line")
        assert "grandma.jpg" not in second.log()     # said once, at the first start, not again


def test_sixteen_bit_masters_come_back_sixteen_bit_with_their_luminance(tmp_path, tiny_models, service_env):
    """A 16-bit gray TIFF and PNG colorized, and translated (with a 16-bit color TIFF), by a real service."""
    import tifffile

    from tests.support.deep import gray16, luminance16, read_deep

    path = write_config(tmp_path, {"colorize": tiny_models["colorize"], "reverse": tiny_models["reverse"]}, QUICK)
    cfg = load_config(path)
    g = gray16((64, 48))
    rgb = np.stack([gray16((64, 48), s) for s in (1, 2, 3)], -1)
    expected = {"colorize": {"master_after.tif", "master_after.png"},
                "reverse": {"master_after.tif", "master_after.png", "color_after.tif"}}
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for q in expected:
            stage = tmp_path / "stage" / q
            stage.mkdir(parents=True)
            for ext in ("tif", "png"):
                Image.fromarray(g).save(stage / f"master_before.{ext}")   # mode I;16
            if q == "reverse":
                tifffile.imwrite(stage / "color_before.tif", rgb, photometric="rgb", compression="zlib")
            for f in sorted(stage.iterdir()):
                f.rename(cfg.inbox(q) / f.name)
        for q, names in expected.items():
            out = cfg.outbox(q)
            wait_for(lambda: names <= ({p.name for p in out.iterdir()} if out.is_dir() else set()), 30,
                     f"the {q} results")
    for ext in ("tif", "png"):
        color = read_deep(cfg.outbox("colorize") / f"master_after.{ext}")
        assert color.dtype == np.uint16 and color.shape == (48, 64, 3), ext
        assert np.abs(luminance16(color) - g).max() <= 1.0, ext   # the master's own luminance, to a level
        gray = read_deep(cfg.outbox("reverse") / f"master_after.{ext}")
        assert gray.dtype == np.uint16 and gray.shape == (48, 64), ext
        assert (gray % 257 != 0).mean() > 0.9, ext   # not 8-bit values scaled up
    from_color = read_deep(cfg.outbox("reverse") / "color_after.tif")
    assert from_color.dtype == np.uint16 and from_color.shape == (48, 64) and (from_color % 257 != 0).mean() > 0.9


def test_sixteen_bit_color_png_and_lzw_tiff_come_back_sixteen_bit_with_their_luminance(tmp_path, tiny_models,
                                                                                       service_env):
    """A 16-bit color PNG (interlaced too) and an LZW TIFF, translated to gray and recolored, by a real service:
    their results are 16-bit and carry the inputs' own 16-bit luminance, which an 8-bit read loses."""
    import tifffile

    from daemon.conversion.converting.encode16 import encode16
    from tests.support.deep import color16, luminance16, png16, read_deep

    path = write_config(tmp_path, {"reverse": tiny_models["reverse"]}, QUICK)
    with path.open("a") as f:
        f.write(f'\n[queues.recolor]\ntask = "colorize"\nmodel = "{tiny_models["colorize"]}"\n'
                'color_inputs = "recolor"\n')
    cfg = load_config(path)
    rgb = color16((64, 48))
    results = {"png_after.png", "interlaced_after.png", "lzw_after.tif"}
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for q in ("reverse", "recolor"):
            stage = tmp_path / "stage" / q
            stage.mkdir(parents=True)
            (stage / "png_before.png").write_bytes(encode16(rgb, "PNG", None, None))
            (stage / "interlaced_before.png").write_bytes(png16(rgb, interlace=True))
            tifffile.imwrite(stage / "lzw_before.tif", rgb, photometric="rgb", compression="lzw", predictor=True)
            for f in sorted(stage.iterdir()):
                f.rename(cfg.inbox(q) / f.name)
        for q in ("reverse", "recolor"):
            out = cfg.outbox(q)
            wait_for(lambda: results <= ({p.name for p in out.iterdir()} if out.is_dir() else set()), 30,
                     f"the {q} results")
        log = s.log()
    assert sum("colorized anew" in ln for ln in log.splitlines()) == 3   # recolored as a color picture
    luma = luminance16(rgb)
    for name in sorted(results):
        gray = read_deep(cfg.outbox("reverse") / name)   # the untrained translate head is the luma transform
        assert gray.dtype == np.uint16 and gray.shape == (48, 64), name
        assert np.abs(gray - luma).max() <= 1.0, name      # to a 16-bit level; 8 bits would be off by ~128
        color = read_deep(cfg.outbox("recolor") / name)
        assert color.dtype == np.uint16 and color.shape == (48, 64, 3), name
        assert np.abs(luminance16(color) - luma).max() <= 1.0, name   # the input's own luminance, to a level


def test_sixteen_bit_masters_with_transparency_and_tiffs_pillow_cannot_open_convert_at_full_depth(
        tmp_path, tiny_models, service_env):
    """By a real service: 16-bit gray-and-alpha PNG and TIFF (Pillow cannot open the TIFF) and a JPEG 2000
    TIFF are colorized, 16-bit RGBA PNG and TIFF turned to gray; each result is 16-bit, keeps the input's
    own luminance to a level and its 16-bit alpha exactly."""
    import tifffile

    from daemon.conversion.converting.encode16 import encode16
    from tests.support.deep import color16, gray16, luminance16, read_deep
    from tests.unet.test_alpha16 import _alpha

    path = write_config(tmp_path, {"colorize": tiny_models["colorize"], "reverse": tiny_models["reverse"]}, QUICK)
    cfg = load_config(path)
    gray, rgb, alpha = gray16((40, 24), 3), color16((40, 24)), _alpha()
    inputs = {"colorize": {"ga_before.png": encode16(np.dstack([gray, alpha]), "PNG", None, None),
                           "ga_before.tif": encode16(np.dstack([gray, alpha]), "TIFF", None, None)},
              "reverse": {"rgba_before.png": encode16(np.dstack([rgb, alpha]), "PNG", None, None),
                          "rgba_before.tif": encode16(np.dstack([rgb, alpha]), "TIFF", None, None)}}
    tifffile.imwrite(tmp_path / "j2k.tif", gray, photometric="minisblack", compression="jpeg2000")
    inputs["colorize"]["j2k_before.tif"] = (tmp_path / "j2k.tif").read_bytes()
    with services() as running:
        s = Service(path, service_env, tmp_path / "stdout.log")
        running.append(s)
        s.wait_ready()
        for q, files in inputs.items():
            stage = tmp_path / "stage" / q
            stage.mkdir(parents=True)
            for name, data in files.items():
                (stage / name).write_bytes(data)
                (stage / name).rename(cfg.inbox(q) / name)
        for q, files in inputs.items():
            out, names = cfg.outbox(q), {n.replace("_before", "_after") for n in files}
            wait_for(lambda: names <= ({p.name for p in out.iterdir()} if out.is_dir() else set()), 30,
                     f"the {q} results")
    for name in ("ga_after.png", "ga_after.tif", "j2k_after.tif"):
        color = read_deep(cfg.outbox("colorize") / name)
        bands = 3 if name.startswith("j2k") else 4
        assert color.dtype == np.uint16 and color.shape == (24, 40, bands), name
        assert np.abs(luminance16(color[..., :3]) - gray).max() <= 1.0, name
        if bands == 4:
            assert np.array_equal(color[..., 3], alpha), name
    for name in ("rgba_after.png", "rgba_after.tif"):
        ga = read_deep(cfg.outbox("reverse") / name)   # the untrained translate head is the luma transform
        assert ga.dtype == np.uint16 and ga.shape == (24, 40, 2), name
        assert np.abs(ga[..., 0] - luminance16(rgb)).max() <= 1.0 and np.array_equal(ga[..., 1], alpha), name
