"""Reading images of every common kind: modes, formats, orientation, limits."""

import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.images import make_image
from tests.support.processes import ROOT
from unet.deepread import is_deep
from unet.images import ImageError, open_image


@pytest.mark.parametrize("mode,ext,expect,alpha", [
    ("L", "png", "L", False), ("LA", "png", "L", True), ("RGB", "jpg", "RGB", False),
    ("RGBA", "png", "RGB", True), ("P", "png", "RGB", False), ("1", "png", "L", False),
    ("CMYK", "jpg", "RGB", False), ("RGB", "webp", "RGB", False), ("RGB", "tif", "RGB", False),
    ("RGB", "bmp", "RGB", False), ("P", "gif", "RGB", False),
])
def test_every_mode_becomes_l_or_rgb(tmp_path, mode, ext, expect, alpha):
    path = make_image(tmp_path / f"x.{ext}", (37, 21), mode)
    if alpha:  # make the alpha band non-trivial
        im = Image.open(path)
        a = Image.linear_gradient("L").resize(im.size)
        im.putalpha(a)
        im.save(path)
    p = open_image(path)
    assert p.image.mode == expect and p.image.size == (37, 21)
    assert (p.alpha is not None) == alpha


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    p = open_image(tmp_path / "deep.png")
    out = np.asarray(p.image)
    assert p.image.mode == "L"
    assert out.min() == 0 and out.max() == 255
    assert 100 < out.mean() < 155  # a clip at 255 would give nearly all white


def test_palette_with_transparency_keeps_its_alpha(tmp_path):
    im = Image.new("P", (10, 10), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    im.putpixel((0, 0), 0)
    im.save(tmp_path / "t.png", transparency=0)
    p = open_image(tmp_path / "t.png")
    assert p.alpha is not None and p.alpha.getpixel((0, 0)) == 0 and p.alpha.getpixel((5, 5)) == 255


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    p = open_image(tmp_path / "rot.jpg")
    assert p.image.size == (20, 40)
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    kept = Image.Exif()
    kept.load(p.exif)
    assert kept.get(0x0112, 1) == 1  # the pixels are upright: no rotation left to apply


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    p = open_image(tmp_path / "anim.gif")
    r, g, b = p.image.getpixel((8, 8))
    assert r > 200 and b < 50


def test_too_many_pixels_refused_before_decoding(tmp_path):
    path = make_image(tmp_path / "big.png", (300, 200))
    with pytest.raises(ImageError, match="megapixels"):
        open_image(path, max_pixels=300 * 200 - 1)


def test_header_that_lies_about_size_is_refused_unread(tmp_path):
    # A PNG header claiming 50000 x 50000: the check reads only the header.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="megapixels"):
        open_image(tmp_path / "bomb.png", max_pixels=100_000_000)


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"<html></html>", b"\x7fELF\x02\x01\x01"])
def test_non_images_give_a_clear_error(tmp_path, content):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(ImageError, match="cannot decode"):
        open_image(tmp_path / "x.jpg")


def test_truncated_files_give_a_clear_error(tmp_path):
    for ext in ("jpg", "png"):
        path = make_image(tmp_path / f"t.{ext}", (200, 150))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError):
            open_image(path)


def _whole_image_to_l(im):
    """The formula of _high_depth_to_l applied to the whole image at once (what it did before blocks)."""
    a = np.asarray(im).astype(np.float64)
    hi = a.max()
    if im.mode == "F" and hi <= 1.0:
        a = a * 255.0
    elif im.mode.startswith("I;16") or hi > 255:
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def test_high_depth_gray_is_scaled_block_by_block_to_the_same_8_bits():
    from unet.images import _high_depth_to_l

    rng = np.random.default_rng(3)
    cases = [Image.fromarray(rng.integers(0, 65536, (301, 257), dtype=np.uint16)),
             Image.fromarray(rng.integers(-5000, 300000, (301, 257)).astype(np.int32), "I"),
             Image.fromarray(rng.integers(0, 200, (33, 17)).astype(np.int32), "I"),
             Image.fromarray(rng.random((301, 257), dtype=np.float32), "F"),
             Image.fromarray((rng.random((301, 257)) * 900 - 50).astype(np.float32), "F")]
    for im in cases:
        for block in (1000, 1 << 21):   # many blocks of a few rows, and one
            assert (np.asarray(_high_depth_to_l(im, block)) == _whole_image_to_l(im)).all(), (im.mode, block)


_PEAK = r"""
import io, sys
import numpy as np
from PIL import Image, ImageOps
from unet import open_image
a = np.full((3000, 5000), 30000, np.uint16)
a[::97, ::89] = 60000
buf = io.BytesIO()
Image.fromarray(a).save(buf, "TIFF", compression="tiff_deflate")
del a
data = io.BytesIO(buf.getvalue())
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
base = kb("VmRSS:")
p = open_image(data)
print((kb("VmHWM:") - base) * 1024 / (5000 * 3000), p.image.mode)
"""


def test_a_16_bit_tiff_is_decoded_without_float_copies_of_the_whole_image():
    # 15 MP of 16-bit gray in a 0.1 MB file: the decoded image is 2 bytes per pixel, the result 1, and the
    # 16-bit samples kept for a 16-bit result 2. Whole-image float64 copies cost 28 bytes per pixel at the
    # peak (2.8 GB for 100 MP); blocks, about 8, and 10 with the samples kept.
    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, cwd=ROOT, check=True)
    per_pixel, mode = out.stdout.split()
    assert mode == "L" and float(per_pixel) < 12, out.stdout   # 10.2 now, 8.1 without the samples, 28 before


def test_a_sixteen_bit_gray_input_keeps_its_own_samples_beside_the_eight_bit_copy(tmp_path):
    from tests.support.deep import gray16

    g = gray16((61, 37))
    for ext in ("png", "tif"):
        Image.fromarray(g).save(tmp_path / f"deep.{ext}")
        p = open_image(tmp_path / f"deep.{ext}")
        assert p.deep is not None and p.deep.dtype == np.uint16 and np.array_equal(p.deep, g), ext
        assert p.image.mode == "L" and np.abs(np.asarray(p.image, dtype=float) - g / 257).max() <= 0.5
    Image.fromarray((g // 257).astype(np.uint8)).save(tmp_path / "shallow.png")
    assert open_image(tmp_path / "shallow.png").deep is None   # an 8-bit input has no 16-bit samples


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_sixteen_bit_rgb_tiff_is_read_whole_and_turned_upright_like_its_8_bit_copy(tmp_path, orientation):
    """Pillow decodes only the high bytes of a 48-bit TIFF; tifffile reads the samples, turned as Pillow turns."""
    import tifffile

    from tests.support.deep import gray16

    rgb = np.stack([gray16((40, 24), s) for s in range(3)], -1)
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression="zlib",
                     extratags=[(274, "H", 1, orientation, True)])
    p = open_image(tmp_path / "c.tif")
    assert p.deep is not None and p.deep.shape == (p.image.height, p.image.width, 3)
    assert np.array_equal(np.asarray(p.image), (p.deep >> 8).astype(np.uint8))   # the same picture, upright


def test_a_float_tiff_or_a_premultiplied_rgba_one_has_no_sixteen_bit_samples(tmp_path):
    """Pillow reads these itself (a float gray scaled to 8 bits; an associated alpha divided out at 8 bits);
    16-bit samples with alpha are tests/unet/test_alpha16.py's."""
    import tifffile

    from tests.support.deep import gray16

    rgba = np.dstack([np.stack([gray16((20, 10))] * 3, -1), np.full((10, 20), 30000, np.uint16)])
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=[1])
    Image.fromarray(np.linspace(0, 1, 200, dtype=np.float32).reshape(10, 20)).save(tmp_path / "f.tif")
    for name in ("a.tif", "f.tif"):
        assert open_image(tmp_path / name).deep is None, name
        with Image.open(tmp_path / name) as im:
            assert not is_deep(im), name   # and the memory budget does not count samples never kept


@pytest.mark.parametrize("orientation", [None, *range(1, 9)])
def test_a_sixteen_bit_rgb_png_is_read_whole_and_turned_upright_like_its_8_bit_copy(tmp_path, orientation):
    """Pillow decodes only the high bytes of a 48-bit PNG; libpng reads its samples, turned by its EXIF."""
    from daemon.conversion.converting.encode16 import encode16
    from tests.support.deep import color16

    rgb = color16((40, 24))
    exif = Image.Exif()
    exif[274] = orientation or 1
    (tmp_path / "c.png").write_bytes(encode16(rgb, "PNG", None, exif.tobytes()))
    p = open_image(tmp_path / "c.png")
    assert p.deep is not None and p.deep.dtype == np.uint16 and p.deep.shape == (p.image.height, p.image.width, 3)
    assert np.array_equal(np.asarray(p.image), (p.deep >> 8).astype(np.uint8))   # the same picture, upright
    assert p.image.size == ((24, 40) if orientation in (5, 6, 7, 8) else (40, 24))
    if orientation in (None, 1):
        assert np.array_equal(p.deep, rgb)
    with Image.open(tmp_path / "c.png") as im:
        assert is_deep(im)


def _xmp(orientation: int, compressed: bool) -> bytes:
    text = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}"/>'
            f'</rdf:RDF></x:xmpmeta>').encode()
    return b"XML:com.adobe.xmp\0" + bytes([compressed, 0]) + b"\0\0" + (zlib.compress(text) if compressed else text)


@pytest.mark.parametrize("where", ["exif before", "exif after", "xmp after", "xmp after, compressed"])
def test_a_sixteen_bit_png_decoded_once_gives_pillows_own_8_bit_picture(tmp_path, where):
    """The 8-bit copy is made from libpng's samples, not decoded again by Pillow: it must be the picture
    Pillow's own decoding gives, turned by an orientation the file holds before its image data or after
    it (which Pillow reads only as it decodes), in its EXIF or its XMP."""
    from tests.support.deep import color16, png16

    rgb = color16((41, 23))
    exif = Image.Exif()
    exif[274] = 6
    kind, data = (b"eXIf", exif.tobytes()) if where.startswith("exif") else (b"iTXt", _xmp(6, "compressed" in where))
    before, after = (((kind, data),), ()) if "before" in where else ((), ((kind, data),))
    (tmp_path / "c.png").write_bytes(png16(rgb, chunks=before, after=after))
    p = open_image(tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        im.load()
        pillow = ImageOps.exif_transpose(im)
    assert pillow.size == (23, 41) and p.image.size == pillow.size, "turned upright, as Pillow turns it"
    assert np.array_equal(np.asarray(p.image), np.asarray(pillow))
    assert np.array_equal(p.deep, np.rot90(rgb, -1)) and p.format == "PNG"


def test_an_interlaced_sixteen_bit_rgb_png_keeps_every_sample(tmp_path):
    from tests.support.deep import color16, png16

    rgb = color16((41, 23))   # odd sizes: Adam7's passes do not divide them evenly
    (tmp_path / "i.png").write_bytes(png16(rgb, interlace=True))
    with Image.open(tmp_path / "i.png") as im:
        assert im.info.get("interlace") and is_deep(im)
    p = open_image(tmp_path / "i.png")
    assert p.deep is not None and np.array_equal(p.deep, rgb)
    assert np.array_equal(np.asarray(p.image), (rgb >> 8).astype(np.uint8))   # Pillow's own 8 bits


@pytest.mark.parametrize("compression", ["lzw", "zstd", "packbits"])
def test_a_compressed_sixteen_bit_rgb_tiff_keeps_its_samples(tmp_path, compression):
    """tifffile decodes LZW, zstd and packbits with imagecodecs; without it such a TIFF was read at 8 bits."""
    import tifffile

    from tests.support.deep import color16

    rgb = color16((40, 24))
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb", compression=compression)
    with Image.open(tmp_path / "c.tif") as im:
        assert is_deep(im)
    p = open_image(tmp_path / "c.tif")
    assert p.deep is not None and np.array_equal(p.deep, rgb)
    assert np.array_equal(np.asarray(p.image), (rgb >> 8).astype(np.uint8))


_WITHOUT_CODECS = r"""
import sys
sys.modules["imagecodecs"] = None   # an install without imagecodecs: importing it raises ImportError
import numpy as np
from PIL import Image, ImageOps
from tests.support.deep import color16
from unet.deepread import is_deep
from unet.images import open_image
rgb = color16((40, 24))
folder = sys.argv[1]
for name in ("c.png", "lzw.tif", "deflate.tif"):
    p = open_image(folder + "/" + name)
    with Image.open(folder + "/" + name) as im:
        deep = is_deep(im)
    print(name, p.deep is not None, deep, np.array_equal(np.asarray(p.image), (rgb >> 8).astype(np.uint8)))
"""


def test_without_imagecodecs_a_16_bit_color_png_and_lzw_tiff_are_read_at_8_bits_as_before(tmp_path):
    """A user without imagecodecs: the PNG and the LZW TIFF give Pillow's 8 bits (and cost no 16-bit
    samples in the budget); a deflate TIFF, which tifffile decodes alone, keeps its 16."""
    import tifffile

    from tests.support.deep import color16, png16

    rgb = color16((40, 24))   # written here: tifffile needs imagecodecs to write LZW too
    (tmp_path / "c.png").write_bytes(png16(rgb))
    for name, compression in (("lzw.tif", "lzw"), ("deflate.tif", "zlib")):
        tifffile.imwrite(tmp_path / name, rgb, photometric="rgb", compression=compression)
    out = subprocess.run([sys.executable, "-c", _WITHOUT_CODECS, str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.split("\n")[:3] == ["c.png False False True", "lzw.tif False False True",
                                    "deflate.tif True True True"], out


_PEAK_RGB16 = r"""
import io, sys
import numpy as np
from daemon.conversion.converting.encode16 import encode16
from unet import open_image
a = np.full((2000, 3000, 3), 30000, np.uint16)
a[::97, ::89] = (60000, 20000, 1000)
data = {"png": encode16(a, "PNG", None, None)}
del a
def kb(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
base = kb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
p = open_image(io.BytesIO(data[sys.argv[1]]))
print((kb("VmHWM:") - base) * 1024 / (3000 * 2000), p.deep is not None)
"""


def test_a_16_bit_color_png_is_read_without_an_extra_full_size_copy():
    """The PNG's samples are decoded once, into the array kept: Pillow's RGB copy (4 bytes a pixel), its
    upright copy (4) and the samples (6) make 14 (the deflate TIFF's path measures about 13 to 20); an
    extra full-size copy of the samples would add 6 or more. Resident memory moves by a few tenths from
    run to run, so the bound sits between the two, not at the TIFF's figure."""
    out = subprocess.run([sys.executable, "-c", _PEAK_RGB16, "png"], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.split()
    assert out[1] == "True"
    assert float(out[0]) < 17, out


def _gray_picture(size=(320, 240), seed=0) -> Image.Image:
    """A gray picture with detail and a little scanner noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).normal(0, 4, (h, w))
    return Image.fromarray((128 + 90 * np.sin(xx / 23.0) * np.cos(yy / 17.0) + noise).clip(0, 255).astype(np.uint8))


def _jpeg(im: Image.Image) -> Image.Image:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_a_gray_or_toned_picture_saved_as_rgb_has_no_color_and_a_color_photo_has(tmp_path):
    from PIL import ImageOps

    from unet.images import has_color

    gray = _gray_picture()
    noisy = np.stack([np.asarray(gray)] * 3, -1) + np.random.default_rng(1).normal(0, 3, (240, 320, 3))
    stamped = np.stack([np.asarray(gray)] * 3, -1)
    stamped[:10, :50] = (200, 30, 30)          # a red stamp on 0.7% of a gray print
    for name, im in {"gray as RGB": _jpeg(gray.convert("RGB")),
                     "noisy gray": Image.fromarray(noisy.clip(0, 255).astype(np.uint8)),
                     "sepia": _jpeg(ImageOps.colorize(gray, "#2b1d0e", "#f5e9d6", mid="#8a6a45")),
                     "strong sepia": _jpeg(ImageOps.colorize(gray, "#301800", "#ffe0a0")),
                     "cyanotype": _jpeg(ImageOps.colorize(gray, "#0b2a4a", "#e8f0f8")),
                     "stamped": Image.fromarray(stamped), "L": gray}.items():
        assert not has_color(im), name
    color = Image.open(make_image(tmp_path / "c.png", (320, 240)))
    warm = np.asarray(ImageOps.colorize(gray, "#301800", "#ffe0a0")).copy()
    warm[100:160, 100:220] = (60, 140, 70)     # green leaves on 9% of a warm-toned picture
    for name, im in {"color": color, "color JPEG": _jpeg(color), "toned with leaves": Image.fromarray(warm)}.items():
        assert has_color(im), name
