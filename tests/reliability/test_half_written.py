"""Half-written files: a writer that appends in steps, closing the file each time, and one that holds it open
and pauses longer than the rescan interval. Each file ends as one result; no fragment is quarantined."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.accounting import account
from tests.support.pictures import picture_pool
from tests.support.rig import Rig, poll
from tests.support.service import names

RESCAN = 6.0   # the watcher's full scan, and how long an unfinished file put back must stay unchanged

# Four `>>` appends 3 s apart, as a shell does them: open, write, close, each time.
APPENDER = 'for part in "$@"; do cat "$part" >> "$DEST"; sleep 3; done'

# Opens the file once, writes half, pauses past the rescan interval, writes the rest, closes.
HOLDER = r"""
import sys, time
dest, src, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(src, "rb").read()
with open(dest, "wb") as f:
    f.write(data[:len(data) // 2])
    f.flush()
    time.sleep(pause)
    f.write(data[len(data) // 2:])
"""


def jpeg(tmp_path):
    pic = next(p for p in picture_pool(tmp_path / "pool") if p.ext == ".jpg")
    return pic.data


def test_files_written_in_steps_or_held_open_are_converted_once_and_never_judged_half_written(tmp_path,
                                                                                          tiny_models,
                                                                                          service_env,
                                                                                          record):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env,
              f"[watch]\nsettle_seconds = 1.0\nrescan_seconds = {RESCAN}\n")
    data = jpeg(tmp_path)
    parts = []
    for i in range(4):
        part = tmp_path / f"part{i}"
        part.write_bytes(data[i * len(data) // 4:(i + 1) * len(data) // 4])
        parts.append(str(part))
    src = tmp_path / "whole.jpg"
    src.write_bytes(data)
    t0 = time.monotonic()
    try:
        rig.start()
        appender = subprocess.Popen(["sh", "-c", APPENDER, "sh", *parts],
                                    env={"DEST": str(rig.inbox() / "appended_before.jpg"), "PATH": "/usr/bin:/bin"})
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(rig.inbox() / "held_before.jpg"), str(src),
                                   str(RESCAN + 4)])
        assert appender.wait(60) == 0 and holder.wait(60) == 0
        poll(lambda: len(names(rig.done())) + len(names(rig.failed())) >= 2, 60, "both files done", rig)
        time.sleep(1.0)
        assert rig.stop() == 0
        tally = account(rig, ["appended_before.jpg", "held_before.jpg"])
    finally:
        rig.close()
    record("a shell appending in four >> steps 3 s apart, a writer holding its file open past rescan_seconds",
           "2 files", len(tally.lost), len(tally.twice), rig.peak_kb, time.monotonic() - t0)
    log = rig.log()
    assert names(rig.failed()) == [], f"quarantined: {names(rig.failed())}\n{log[-3000:]}"
    assert sorted(names(rig.outbox())) == ["appended_after.jpg", "held_after.jpg"]
    assert tally.lost == [] and tally.twice == [] and tally.leftover == []
    assert (rig.done() / "appended_before.jpg").read_bytes() == data   # judged only once whole
    assert (rig.done() / "held_before.jpg").read_bytes() == data
    # How each was recognised: the held one by its writer in /proc, the appended one put back to wait.
    assert "held_before.jpg: still open for writing by process" in log
    assert "appended_before.jpg is not complete yet" in log
