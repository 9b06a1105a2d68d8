"""The inbox sidecar on real folders: which hints file belongs to a picture, and taking it with the picture."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from daemon.conversion.claims.owners import Owner
from daemon.conversion.claims.sidecar import claim_hints, hints_beside, merged_hints
from daemon.conversion.claims.spool import Spool
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


def dropped(cfg, name="cat", *hints):
    inbox = cfg.inbox("colorize")
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{name}_before.jpg").write_bytes(b"picture")
    for h in hints or (f"{name}_hints.json",):
        (inbox / h).write_bytes(points((0.5, 0.5, "#ff0000")))
    return inbox


def test_the_hints_are_claimed_under_the_pictures_ticket(cfg, owner):
    inbox = dropped(cfg)
    spool = Spool(cfg, "colorize", owner)
    picture = claim_hints(spool, spool.claim(inbox / "cat_before.jpg"))
    assert picture.companions == ("cat_hints.json",) and list(inbox.iterdir()) == []
    [taken] = spool.companion_paths(picture)
    assert taken.name == f"{picture.ticket}@cat_hints.json" and taken.parent == picture.path.parent
    assert claim_hints(spool, picture) == picture   # gone from the inbox already: nothing taken twice


def test_the_hints_go_where_their_picture_goes(cfg, owner):
    inbox = dropped(cfg, "a")
    dropped(cfg, "b")
    dropped(cfg, "c")
    spool = Spool(cfg, "colorize", owner)
    a, b, c = (claim_hints(spool, spool.claim(inbox / f"{n}_before.jpg")) for n in "abc")
    spool.done(a)
    spool.quarantine(b, "cannot decode image")
    spool.put_back(c)
    assert sorted(p.name for p in spool.done_dir.iterdir()) == ["a_before.jpg", "a_hints.json"]
    failed = sorted(p.name for p in spool.failed_dir.iterdir())
    assert failed == ["b_before.jpg", "b_before.jpg.reason.txt", "b_hints.json", "b_hints.json.reason.txt"]
    assert "its picture b_before.jpg failed: cannot decode image" in (spool.failed_dir / "b_hints.json.reason.txt").read_text()
    assert sorted(p.name for p in inbox.iterdir()) == ["c_before.jpg", "c_hints.json"]
    assert list(spool.work.iterdir()) == []


def test_recovery_gives_a_dead_claims_picture_its_hints_back(cfg, owner):
    """What a kill -9 leaves: a picture and its hints under a dead instance's ticket, or the picture alone
    (killed between the two claims: the hints still in the inbox), or the hints alone, marked for where the
    picture went before the kill (its move came first)."""
    spool = Spool(cfg, "colorize", owner)
    work, inbox = spool.work, dropped(cfg, "late")
    (work / "123xdead00-1@both_before.jpg").write_bytes(b"p")
    (work / "123xdead00-1@both_hints.json").write_bytes(b"{}")
    os.rename(inbox / "late_before.jpg", work / "123xdead00-2@late_before.jpg")
    (work / "123xdead00-3@.done@went_hints.json").write_bytes(b"{}")
    (work / "123xdead00-4@.failed@bad_hints.json").write_bytes(b"{}")
    (work / "123xdead00-5@.back@wait_hints.json").write_bytes(b"{}")
    got = {c.name: c for c in spool.recover()}
    assert sorted(got) == ["both_before.jpg", "late_before.jpg"]
    assert got["both_before.jpg"].companions == ("both_hints.json",)
    [moved] = spool.companion_paths(got["both_before.jpg"])
    assert moved.name == f"{got['both_before.jpg'].ticket}@both_hints.json"
    late = claim_hints(spool, got["late_before.jpg"])   # what the feed does with a picture recovered alone
    assert late.companions == ("late_hints.json",)
    assert sorted(p.name for p in spool.done_dir.iterdir()) == ["went_hints.json"]
    assert "bad_hints.json.reason.txt" in {p.name for p in spool.failed_dir.iterdir()}
    assert sorted(p.name for p in inbox.iterdir()) == ["wait_hints.json"]


def test_a_long_names_hints_share_its_folder_and_come_back_with_it(cfg, owner):
    stem = "x" * 240
    inbox = dropped(cfg, stem)
    spool = Spool(cfg, "colorize", owner)
    item = claim_hints(spool, spool.claim(inbox / f"{stem}_before.jpg"))
    assert item.path.parent.name.endswith("@") and spool.companion_paths(item)[0].parent == item.path.parent
    later = Owner(cfg.state_dir("work"))
    owner.close()
    try:
        [again] = Spool(cfg, "colorize", later).recover()
        assert again.name == f"{stem}_before.jpg" and again.companions == (f"{stem}_hints.json",)
    finally:
        later.close()


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
