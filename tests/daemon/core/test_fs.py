"""File operations: one numbering of free names, one cross-filesystem move, one file lock, JSON lines."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemon.core.fs import append_jsonl, file_lock, move, numbered, read_jsonl, temp_name, temp_writer
from tests.support.filesystems import other_filesystem


def test_free_names_number_before_the_extension_or_after_a_whole_name():
    assert [n for _, n in zip(range(3), numbered("a_after.jpg"))] == ["a_after.jpg", "a_after-1.jpg", "a_after-2.jpg"]
    assert [n for _, n in zip(range(3), numbered("my.photo", first=2, split_ext=False))] == \
        ["my.photo", "my.photo-2", "my.photo-3"]


def test_temporary_names_carry_their_writer():
    assert temp_writer(temp_name("123xab")) == "123xab" and temp_writer(temp_name()) == ""


def test_move_across_filesystems_copies_then_removes(tmp_path):
    src = other_filesystem(tmp_path) / f"reverser-test-move-{os.getpid()}"
    src.write_bytes(b"pair half")
    move(src, tmp_path / "dst.png")
    assert (tmp_path / "dst.png").read_bytes() == b"pair half" and not src.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["dst.png"], "no temporary file left"


def test_a_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / "x" / ".lock"
    with file_lock(lock):
        got = []

        def other():
            try:
                with file_lock(lock, blocking=False):
                    got.append("held")
            except BlockingIOError:
                got.append("busy")

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert got == ["busy"]
        waited = []
        t = threading.Thread(target=lambda: (file_lock(lock).__enter__(), waited.append(time.monotonic())))
        start = time.monotonic()
        t.start()
        time.sleep(0.2)
        assert not waited, "a blocking lock waits for the holder"
    t.join(5)
    assert waited and waited[0] - start >= 0.2


def test_json_lines_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "history.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"b": "é"})
    with open(path, "a") as f:
        f.write('{"c": ')   # a power cut mid-write
    assert read_jsonl(path) == [{"a": 1}, {"b": "é"}] and read_jsonl(tmp_path / "none.jsonl") == []


def test_numbered_names_fit_the_file_name_limit_keeping_number_and_extension():
    name = "a" * 251 + ".jpg"
    first, second = [n for _, n in zip(range(2), numbered(name))]
    assert first == name and second == "a" * 249 + "-1.jpg" and len(second) == 255
    assert len(next(iter(numbered("b" * 300, split_ext=False)))) == 255


def test_numbering_a_name_at_the_limit_cuts_its_stem_never_the_after_marker():
    for name in ("a" * (255 - len("_after.jpg")) + "_after.jpg", "é" * 120 + "_before.png"):
        names = [n for _, n in zip(range(3), numbered(name))]
        mark, ext = ("_after", ".jpg") if "_after" in name else ("_before", ".png")
        assert names[1].endswith(f"{mark}-1{ext}") and names[2].endswith(f"{mark}-2{ext}")
        assert all(len(n.encode()) <= 255 for n in names) and names[1] != names[2]
    assert list(zip(range(2), numbered("_after.jpg")))[1][1] == "_after-1.jpg"   # a marker alone is the name


def test_json_lines_keep_a_name_that_is_not_utf8(tmp_path):
    path = tmp_path / "index.jsonl"
    name = os.fsdecode(b"photo\xe9.jpg")
    append_jsonl(path, {"files": [name], "note": "café"})
    path.read_text(encoding="utf-8")                  # still UTF-8 text
    assert read_jsonl(path) == [{"files": [name], "note": "café"}]


def test_a_move_across_filesystems_cut_short_leaves_no_temporary(tmp_path, monkeypatch):
    import daemon.core.fs as fs

    other = other_filesystem(tmp_path)
    src = tmp_path / "x.jpg"
    src.write_bytes(b"x" * 100_000)
    folder = Path(tempfile.mkdtemp(dir=other))
    try:
        def full(src, dst, st):
            dst.write_bytes(b"x" * 10)
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(fs, "copy_entry", full)
        with pytest.raises(OSError):
            fs.move_into(src, folder, "x.jpg")
        assert os.listdir(folder) == [] and src.exists()
    finally:
        shutil.rmtree(folder)
