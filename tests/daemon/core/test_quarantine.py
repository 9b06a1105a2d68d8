"""Quarantine: one reason format, for conversion and training alike, never replacing an earlier file."""

from __future__ import annotations

import time

from daemon.core.quarantine import quarantine


def test_conversion_and_training_notes_have_one_format(tmp_path):
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    inbox.mkdir()
    notes = {}
    for training in (False, True):
        src = inbox / "x_before.jpg"
        src.write_bytes(b"junk")
        dest = quarantine(src, failed, src.name, "cannot decode image", queue="colorize", inbox=inbox,
                          training=training)
        notes[training] = (failed / (dest.name + ".reason.txt")).read_text()
    for text in notes.values():
        for field in ("what went wrong: cannot decode image", "when:            " + time.strftime("%Y-%m-%d"),
                      "queue:           colorize", "what to do:      ", str(inbox)):
            assert field in text
    assert "(training pairs)" in notes[True] and "(training pairs)" not in notes[False]
    assert sorted(p.name for p in failed.iterdir()) == ["x_before-1.jpg", "x_before-1.jpg.reason.txt",
                                                        "x_before.jpg", "x_before.jpg.reason.txt"]


def test_a_long_name_gets_a_note_that_fits(tmp_path):
    name = "é" * 124 + ".png"   # 252 bytes: the note's name would not fit whole
    src = tmp_path / name
    src.write_bytes(b"x")
    quarantine(src, tmp_path / "failed", name, "refused", queue="q", inbox=tmp_path, training=True)
    (note,) = [p for p in (tmp_path / "failed").iterdir() if p.name.endswith(".reason.txt")]
    assert len(note.name.encode()) <= 255 and name in note.read_text()
