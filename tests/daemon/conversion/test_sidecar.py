"""The inbox sidecar on real folders: which hints file belongs to a picture, and taking it with the picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from daemon.conversion.sidecar import claim_hints, hints_beside, merged_hints
from daemon.conversion.spool import Spool
from daemon.core.names import hints_names, hints_stem, is_hints, is_input
from unet.hints import HintError


def points(*pts) -> bytes:
    return json.dumps({"points": [{"x": x, "y": y, "color": c} for x, y, c in pts]}).encode()


def strokes_png(path):
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((2, 3), (200, 30, 30, 255))
    layer.save(path)


def test_a_hints_file_is_named_by_its_picture_and_is_not_an_input():
    assert is_hints("cat_hints.json") and is_hints("cat_HINTS.PNG") and is_hints("a b_hints.png")
    assert not is_hints("_hints.json") and not is_hints("cat_hints.txt") and not is_hints("cat.json")
    assert not is_hints(".cat_hints.json") and not is_hints("cat_hints.json.part")
    assert not is_input("cat_hints.png") and not is_input("cat_hints.json")
    assert hints_stem("cat_hints.json") == hints_stem("cat_before.jpg") == hints_stem("cat_BEFORE.PNG") == "cat"
    assert hints_names("cat_before.jpg")[:2] == ["cat_hints.json", "cat_HINTS.JSON"]
    assert "cat_hints.png" in hints_names("cat_before.jpg") and "Cat_hints.json" not in hints_names("cat_before.jpg")


def test_a_picture_finds_its_hints_json_before_png_and_no_others(cfg):
    inbox = cfg.inbox("colorize")
    inbox.mkdir(parents=True)
    (inbox / "cat_hints.png").write_bytes(b"x")
    (inbox / "cat_hints.json").write_bytes(b"x")
    (inbox / "dog_hints.json").write_bytes(b"x")
    assert [p.name for p in hints_beside(inbox, "cat_before.jpg")] == ["cat_hints.json", "cat_hints.png"]
    assert hints_beside(inbox, "bird_before.jpg") == []


def test_the_hints_are_claimed_into_work_with_the_picture(cfg, owner):
    inbox = cfg.inbox("colorize")
    spool = Spool(cfg, "colorize", owner)
    (inbox / "cat_before.jpg").write_bytes(b"picture")
    (inbox / "cat_hints.json").write_bytes(points((0.5, 0.5, "#ff0000")))
    picture = spool.claim(inbox / "cat_before.jpg")
    taken = claim_hints(spool, inbox, picture.name)
    assert [t.name for t in taken] == ["cat_hints.json"] and taken[0].path.parent == picture.path.parent
    assert sorted(p.name for p in inbox.iterdir()) == []
    assert claim_hints(spool, inbox, picture.name) == []   # gone already: nothing taken twice


def test_a_json_and_a_png_together_give_points_and_strokes(tmp_path):
    (tmp_path / "cat_hints.json").write_bytes(points((0.1, 0.2, "#00ff00"), (0.9, 0.9, "#0000ff")))
    strokes_png(tmp_path / "cat_hints.png")
    hints = merged_hints([tmp_path / "cat_hints.json", tmp_path / "cat_hints.png"])
    assert len(hints) == 2 and hints.strokes is not None
    assert "2 color points" in hints.describe() and "stroke layer" in hints.describe()
    assert np.allclose(hints.xs, [0.1, 0.9]) and merged_hints([]) is None


def test_an_unreadable_hints_file_says_why(tmp_path):
    (tmp_path / "cat_hints.json").write_bytes(points((1.5, 0.2, "#00ff00")))
    with pytest.raises(HintError):
        merged_hints([tmp_path / "cat_hints.json"])
