"""The file index on its own: upload names, inbox numbering, records that outlive a restart and stay bounded."""

from __future__ import annotations

import io

import pytest

from daemon.core.config import parse_config
from daemon.core.names import NAME_MAX, is_input, name_bytes
from daemon.web.files import FileIndex, Refused, inbox_names, upload_name


@pytest.mark.parametrize("given, name", [
    ("scan.jpg", "scan_before.jpg"),
    ("Scan 3.JPG", "Scan_3_before.JPG"),
    ("../../etc/passwd.png", "passwd_before.png"),
    ("C:\\Users\\me\\photo_before.tif", "photo_before.tif"),
    (".hidden.png", "hidden_before.png"),
    ("grand-mère.heic", "grand-mère_before.heic"),
    ("x_before-2.jpg", "x_before.jpg"),           # a numbered name from failed/ gets its input name back
    (".png", "upload_before.png"),
])
def test_an_upload_name_is_a_safe_input_name(given, name):
    assert upload_name(given) == name
    assert is_input(name)


@pytest.mark.parametrize("given", ["notes.txt", "archive.tar.gz", "", "no_extension"])
def test_a_name_without_an_image_extension_is_refused(given):
    with pytest.raises(Refused) as info:
        upload_name(given)
    assert info.value.status == 415


def test_inbox_names_number_before_the_before_and_fit_the_limit():
    names = inbox_names("scan_before.jpg")
    assert [next(names) for _ in range(3)] == ["scan_before.jpg", "scan-1_before.jpg", "scan-2_before.jpg"]
    long = upload_name("x" * 300 + ".png")
    for n, name in zip(range(12), inbox_names(long)):
        assert name_bytes(name) <= NAME_MAX and is_input(name), name


def config(tmp_path):
    raw = {"paths": {"inbox": "in", "outbox": "out", "state": "var"},
           "queues": {"colorize": {"task": "colorize", "model": "m"}}}
    return parse_config(raw, base=tmp_path)


def test_records_outlive_a_restart_and_stay_bounded(tmp_path):
    cfg = config(tmp_path)
    index = FileIndex(cfg, keep=5)
    up = index.upload("colorize", "a.png", io.BytesIO(b"\x89PNG not really"))
    assert index.state(up["id"])["state"] == "waiting"
    (cfg.inbox("colorize") / "a_before.png").unlink()          # claimed by the service
    assert index.state(up["id"])["state"] == "working"
    index.placed("colorize", "a_before.png", cfg.outbox("colorize") / "a_after-1.png", None, "")
    thumb = cfg.paths.state / "web" / "thumbs" / f"{up['id']}-after.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"a thumbnail")
    for i in range(12):   # files dropped by hand, finished
        index.placed("colorize", f"hand{i}_before.png", cfg.outbox("colorize") / f"hand{i}_after.png", None, "")
    again = FileIndex(cfg, keep=5)
    assert len(again.records) == 5 and again.state(up["id"]) is None          # the oldest went
    assert not thumb.exists(), "and its thumbnail with it"
    newest = again.done(0, 10)[0]
    assert [r["result"] for r in newest] == [f"hand{i}_after.png" for i in range(11, 6, -1)]
    lines = (cfg.paths.state / "web" / "files.jsonl").read_text().splitlines()
    assert len(lines) <= 2 * 5 + 1, "the record file is rewritten whole when it grows"


def test_an_upload_over_max_file_mb_leaves_nothing(tmp_path):
    cfg = parse_config({"limits": {"max_file_mb": 0.001}, "queues": {"colorize": {"task": "colorize", "model": "m"}}},
                       base=tmp_path)
    index = FileIndex(cfg)
    with pytest.raises(Refused) as info:
        index.upload("colorize", "big.png", io.BytesIO(b"\0" * 5000))
    assert info.value.status == 413
    assert list(cfg.inbox("colorize").iterdir()) == []
