"""The file index on its own: upload names, inbox numbering, records that outlive a restart and stay bounded,
and records a restart settles from the folders."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from daemon.core.config import parse_config
from daemon.core.fs import move_into
from daemon.core.names import NAME_MAX, is_input, name_bytes
from daemon.core.quarantine import quarantine
from daemon.web.files import FileIndex
from daemon.web.ondisk import Refused, inbox_names, upload_name


@pytest.mark.parametrize("given, name", [
    ("scan.jpg", "scan_before.jpg"),
    ("Scan 3.JPG", "Scan_3_before.JPG"),
    ("../../etc/passwd.png", "passwd_before.png"),
    ("C:\\Users\\me\\photo_before.tif", "photo_before.tif"),
    (".hidden.png", "hidden_before.png"),
    ("grand-mère.heic", "grand-mère_before.heic"),
    ("x_before-2.jpg", "x_before.jpg"),           # a numbered name from failed/ gets its input name back
    ("x_after.png", "x_before.png"),              # as the inbox renames it (core.names.input_name)
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


def test_a_report_heard_again_after_a_restart_updates_its_record(tmp_path):
    # The last run said done before the input could leave work/ (done/ full); the restart's recovery
    # moves it and says so again, with where the input went: the same record, now with its input.
    cfg = config(tmp_path)
    index = FileIndex(cfg)
    up = index.upload("colorize", "a.png", io.BytesIO(b"\x89PNG not really"))
    result = cfg.outbox("colorize") / "a_after.png"
    index.placed("colorize", "a_before.png", result, None, "")
    again = FileIndex(cfg)
    again.placed("colorize", "a_before.png", result, cfg.state_dir("done", "colorize") / "a_before.png", "")
    assert list(again.records) == [up["id"]] and again.records[up["id"]]["kept"] == "a_before.png"
    assert FileIndex(cfg).done()[1] == 1


def finished(cfg, index: FileIndex, name: str, data: bytes) -> tuple[dict, Path]:
    """An upload the service took from the inbox (by rename, keeping its inode, as a claim does)."""
    up = index.upload("colorize", name, io.BytesIO(data))
    work = cfg.state_dir("work", "colorize")
    work.mkdir(parents=True, exist_ok=True)
    claimed = work / f"123xdead00-0@{up['name']}"
    os.rename(cfg.inbox("colorize") / up["name"], claimed)
    return up, claimed


def test_records_the_service_never_settled_are_settled_from_the_folders(tmp_path):
    cfg = config(tmp_path)
    index = FileIndex(cfg)
    outbox, done = cfg.outbox("colorize"), cfg.state_dir("done", "colorize")
    # Converted: its input moved to done/ (numbered past an older one), its result written; a result of
    # the same name written before the upload is not taken for its own.
    outbox.mkdir(parents=True)
    (outbox / "c_after.png").write_bytes(b"an older file's result")
    os.utime(outbox / "c_after.png", (time.time() - 3600,) * 2)
    done.mkdir(parents=True)
    (done / "c_before.png").write_bytes(b"an older input")
    conv, claimed = finished(cfg, index, "c.png", b"converted")
    assert move_into(claimed, done, "c_before.png") == done / "c_before-1.png"
    (outbox / "c_after-1.png").write_bytes(b"its result")
    # Quarantined, with its note.
    bad, claimed = finished(cfg, index, "b.png", b"broken")
    quarantine(claimed, cfg.failed("colorize"), "b_before.png", "cannot decode image: broken data",
               queue="colorize", inbox=cfg.inbox("colorize"))
    # Converted, its result then moved away by hand.
    lost, claimed = finished(cfg, index, "l.png", b"lost")
    move_into(claimed, done, "l_before.png")
    # Still in the pipeline (sent through again by the recovery), and still in the inbox.
    busy, _ = finished(cfg, index, "w.png", b"in work")
    waiting = index.upload("colorize", "i.png", io.BytesIO(b"in the inbox"))

    again = FileIndex(cfg)          # the restart: every record reads waiting
    assert {again.state(r["id"])["state"] for r in (conv, bad, lost)} == {"working"}
    again.settle({("colorize", "w_before.png")})
    got = again.state(conv["id"])
    assert (got["state"], got["result_name"]) == ("done", "c_after-1.png")
    assert again.records[conv["id"]]["kept"] == "c_before-1.png" and again.before(conv["id"]).size == 9
    got = again.state(bad["id"])
    assert got["state"] == "failed" and got["reason"] == "cannot decode image: broken data"
    assert [r["id"] for r in again.failed()[0]] == [bad["id"]], "the Failed list has it once"
    got = again.state(lost["id"])
    assert got["state"] == "unknown" and "l_before.png" in got["reason"] and "no result of it" in got["reason"]
    assert again.state(busy["id"])["state"] == "working" and again.state(waiting["id"])["state"] == "waiting"
    # A late report still settles an unknown record; a restart keeps what was settled.
    (outbox / "l_after.png").write_bytes(b"put back")
    again.placed("colorize", "l_before.png", outbox / "l_after.png", done / "l_before.png", "")
    third = FileIndex(cfg)
    third.settle(set())
    assert [third.state(r["id"])["state"] for r in (conv, bad, lost)] == ["done", "failed", "done"]


def test_two_results_of_its_name_leave_a_record_unknown_rather_than_guessed(tmp_path):
    cfg = parse_config({"output": {"keep_inputs": False},
                        "queues": {"colorize": {"task": "colorize", "model": "m"}}}, base=tmp_path)
    index = FileIndex(cfg)
    up, claimed = finished(cfg, index, "d.png", b"deleted once converted")
    claimed.unlink()
    outbox = cfg.outbox("colorize")
    outbox.mkdir(parents=True)
    for n in ("d_after.png", "d_after-1.png"):
        (outbox / n).write_bytes(b"a result")
    again = FileIndex(cfg)
    again.settle(set())
    got = again.state(up["id"])
    assert got["state"] == "unknown" and "2 results of its name" in got["reason"], got
    assert "d_after.png" in got["reason"] and "d_after-1.png" in got["reason"]
