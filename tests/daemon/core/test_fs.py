"""File operations: one numbering of free names, one cross-filesystem move, one file lock, JSON lines."""

from __future__ import annotations

import os
import threading
import time

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
