"""The name rules: one place answers which names are inputs, partial files, pairs and results."""

from __future__ import annotations

import os

from daemon.core.names import (EXT_FORMAT, fitted, format_list, is_convertible, is_input, is_pair_file,
                               is_partial, output_name, pair_half, reason_name, shown)
from unet.data import IMAGE_EXTS


def test_one_extension_table_for_reading_training_and_writing():
    assert set(EXT_FORMAT) == IMAGE_EXTS
    assert EXT_FORMAT[".jpg"] == EXT_FORMAT[".jpeg"] == "JPEG" and EXT_FORMAT[".tif"] == "TIFF"
    assert format_list() == "AVIF, BMP, GIF, HEIF, JPEG, PNG, TIFF or WebP"


def test_the_service_converts_only_NAME_before_images():
    assert is_input("cat_before.jpg") and is_input("Cat_BEFORE.PNG")
    assert not is_input("_before.jpg") and not is_input("cat.jpg") and not is_input("cat_before.txt")


def test_partial_and_hidden_names_are_never_taken():
    for name in ("a_before.jpg.part", "a_before.jpg.crdownload", "a.tmp", "a~", ".a_before.jpg"):
        assert is_partial(name) and not is_pair_file(name)
    assert not is_partial("a_before.jpg") and is_pair_file("photo.webp")


def test_convert_takes_images_that_are_not_results():
    assert is_convertible("scan.png") and is_convertible("a_before.jpg")
    assert not is_convertible("scan_after.png") and not is_convertible(".scan.png") and not is_convertible("a.txt")


def test_pair_halves_and_result_names():
    assert pair_half("boat_before") == ("boat", "before") and pair_half("boat_AFTER") == ("boat", "after")
    assert pair_half("boat") is None
    assert output_name("x_before.JPG") == "x_after.JPG" and output_name("x.gif") == "x_after.png"
    assert output_name("x_before.jpg", "png") == "x_after.png"


def test_a_reason_name_fits_the_file_name_limit():
    long = "é" * 127 + ".jpg"
    assert len(reason_name(long).encode()) <= 255 and reason_name(long).endswith(".reason.txt")


def test_a_long_name_is_cut_short_keeping_its_extension_and_suffix():
    long = "é" * 125 + "_before.jpg"                          # 261 bytes
    assert len(long.encode()) > 255
    out = output_name(long)
    assert len(out.encode()) <= 255 and out.endswith("_after.jpg") and out.startswith("é")
    assert output_name("a" * 251 + ".png") == "a" * (255 - len("_after.png")) + "_after.png"
    assert fitted(os.fsdecode(b"\xe9" * 300), ".tif") == os.fsdecode(b"\xe9" * 251) + ".tif"


def test_names_are_shown_without_raw_bytes_or_control_characters():
    assert shown(os.fsdecode(b"photo\xe9.jpg")) == "photo\\xe9.jpg"
    assert shown("red\x1b[31m\x9b.png") == "red\\x1b[31m\\x9b.png"
    assert shown("two\nlines") == "two\\x0alines" and shown("kept\n\there", keep="\n\t") == "kept\n\there"
    assert shown("café ☕") == "café ☕"


def test_a_format_not_read_is_named_as_a_format_and_a_wrong_name_as_a_name():
    from daemon.core.names import NAME_MAX, input_name, name_bytes, not_taken
    why = not_taken("x_before.xyz", "NAME_before.<image ext>")
    assert "the format .xyz is not one read here" in why and ".heic" in why and "name" not in why
    assert not_taken("grandma.jpg", "NAME_before.<image ext>", input_name) == \
        "left alone: the name is not NAME_before.<image ext>; rename it grandma_before.jpg"
    assert input_name("grandma_AFTER.JPG") == "grandma_before.JPG" and input_name("_before.png") == "photo_before.png"
    assert name_bytes(input_name("é" * 127 + ".jpg")) <= NAME_MAX   # cut short to fit, never too long
    assert is_input("IMG_0001_before.HEIC") and is_input("scan_before.avif") and is_input("s_before.heif")
