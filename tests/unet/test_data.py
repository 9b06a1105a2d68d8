"""Training pairs: discovery, the split, fingerprints."""

import pytest

from tests.support.images import make_image
from unet.data import find_pairs, fingerprint, is_val, load_pair, split
from unet.images import ImageError


def _pair(folder, name, seed=0, size=(48, 32)):
    make_image(folder / f"{name}_after.png", size, "RGB", seed=seed)
    make_image(folder / f"{name}_before.png", size, "L", seed=seed)


def test_pairs_are_matched_by_name_across_extensions(tmp_path):
    _pair(tmp_path, "a")
    make_image(tmp_path / "b_before.jpg", (48, 32), "L")
    make_image(tmp_path / "b_after.PNG", (48, 32), "RGB")
    make_image(tmp_path / "c_before.png", (48, 32), "L")  # half a pair
    make_image(tmp_path / "lone.jpg", (48, 32), "RGB")
    (tmp_path / ".hidden_before.png").write_bytes(b"")
    assert [p.name for p in find_pairs([tmp_path])] == ["a", "b"]
    with_lone = {p.name: p for p in find_pairs([tmp_path], allow_lone_color=True)}
    assert set(with_lone) == {"a", "b", "lone"} and with_lone["lone"].before is None


def test_a_lone_color_image_makes_a_pair_and_a_lone_gray_does_not(tmp_path):
    make_image(tmp_path / "color.jpg", (48, 32), "RGB")
    make_image(tmp_path / "gray.jpg", (48, 32), "L")
    pairs = {p.name: p for p in find_pairs([tmp_path], allow_lone_color=True)}
    before, after = load_pair(pairs["color"])
    assert before.mode == "L" and after.mode == "RGB" and before.size == after.size
    with pytest.raises(ImageError, match="must be in color"):
        load_pair(pairs["gray"])


def test_halves_of_different_pictures_are_refused(tmp_path):
    make_image(tmp_path / "x_before.png", (48, 32), "L")
    make_image(tmp_path / "x_after.png", (32, 48), "RGB")
    with pytest.raises(ImageError, match="same picture"):
        load_pair(find_pairs([tmp_path])[0])


def test_split_is_stable_as_data_grows():
    names = [f"plate_{i}" for i in range(400)]
    _, val_small = split([_Ref(n) for n in names[:200]], 15)
    _, val_big = split([_Ref(n) for n in names], 15)
    assert {p.name for p in val_small} <= {p.name for p in val_big}
    assert 0.08 < len(val_big) / 400 < 0.22  # about the share asked for
    assert all(is_val(p.name, 15) for p in val_big)


class _Ref:
    def __init__(self, name):
        self.name = name


def test_fingerprint_follows_content(tmp_path):
    _pair(tmp_path, "a")
    pairs = find_pairs([tmp_path])
    fp = fingerprint(pairs)
    assert fp == fingerprint(find_pairs([tmp_path]))
    make_image(tmp_path / "a_after.png", (48, 32), "RGB", seed=9)
    assert fingerprint(find_pairs([tmp_path])) != fp


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_pairs([tmp_path / "nowhere"])


def test_swap_reads_pairs_the_other_way_round(tmp_path):
    _pair(tmp_path, "a")
    make_image(tmp_path / "lone.jpg", (48, 32), "RGB")
    [p] = find_pairs([tmp_path], allow_lone_color=True, swap=True)
    assert p.before.name == "a_after.png" and p.after.name == "a_before.png"
    before, after = load_pair(p)
    assert before.mode == "RGB" and after.mode == "L"


def test_a_pair_name_that_is_not_utf8_is_split_by_its_bytes():
    import os

    odd = os.fsdecode(b"photo\xe9")                    # how a Linux name that is not UTF-8 arrives
    assert is_val(odd, 50) in (True, False)
    assert is_val("café", 15) == is_val(os.fsdecode("café".encode()), 15)   # UTF-8 names: the split is unchanged
