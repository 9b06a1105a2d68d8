"""An outbox that cannot take results (read-only, or its disk full): the error is said plainly, no input
is lost or quarantined for a fault that is not its own, the service runs on, and once the outbox takes
results again every held file is converted, exactly once."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support.images import make_image
from tests.support.service import names
from tests.support.accounting import account, temp_files
from tests.support.rig import Rig, poll, without_file_permission_override

NO_DAC = without_file_permission_override()
FILES = 6


def _drop(rig: Rig, prefix: str) -> list[str]:
    out = []
    for i in range(FILES):
        name = f"{prefix}{i}_before.png"
        make_image(rig.root / "stage" / name, (64, 48), "L", seed=i)
        os.rename(rig.root / "stage" / name, rig.inbox() / name)
        out.append(name)
    return out


def _held(rig: Rig, dropped: list[str]) -> list[str]:
    """The dropped inputs that are still somewhere the service will finish them from (inbox or work/)."""
    here = [n for n in names(rig.inbox())] + [n.split("@", 1)[-1] for n in names(rig.work())]
    return [n for n in dropped if n in here]


def _check_held_then_done(rig: Rig, dropped: list[str], fix, words: str, scenario: str, record, t0: float):
    poll(lambda: words in rig.log(), 60, f"the error ({words!r}) in the log", rig)
    time.sleep(2)  # several retries meanwhile
    assert rig.alive()
    assert sorted(_held(rig, dropped)) == sorted(dropped), "every input is held, none lost or quarantined"
    assert not [n for n in names(rig.failed()) if not n.endswith(".reason.txt")], "the inputs are not at fault"
    fix()
    poll(lambda: len(names(rig.done())) >= len(dropped), 90, "every held file converted once the outbox works", rig)
    assert rig.stop() == 0
    tally = account(rig, dropped)
    record(scenario, f"{len(dropped)} files", len(tally.lost), len(tally.twice), rig.peak_kb,
           time.monotonic() - t0)
    assert tally.lost == [] and tally.twice == [] and tally.quarantined == 0 and tally.leftover == []
    assert temp_files(rig) == []


def test_a_read_only_outbox_holds_files_until_it_is_writable_again(tmp_path, tiny_models, service_env, record):
    if NO_DAC is None:
        pytest.skip("the service would run as root, which writes into read-only folders (setpriv is missing)")
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env, prefix=NO_DAC)
    t0 = time.monotonic()
    try:
        rig.start()
        (rig.root / "stage").mkdir()
        rig.failed().mkdir(parents=True, exist_ok=True)
        for d in (rig.failed(), rig.outbox()):
            os.chmod(d, 0o555)
        dropped = _drop(rig, "ro")

        def fix():
            for d in (rig.outbox(), rig.failed()):
                os.chmod(d, 0o755)

        _check_held_then_done(rig, dropped, fix, "Permission denied", "read-only outbox, made writable later",
                              record, t0)
    finally:
        for d in (rig.outbox(), rig.failed()):
            if d.exists():
                os.chmod(d, 0o755)
        rig.close()


def test_a_full_disk_on_the_outbox_holds_files_until_there_is_room(tmp_path, tiny_models, service_env, record):
    outbox = tmp_path / "outbox" / "colorize"
    outbox.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(outbox)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk here ({r.stderr.strip() or r.returncode})")
    rig = None
    try:
        rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env)
        t0 = time.monotonic()
        rig.start()
        (rig.root / "stage").mkdir()
        filler = outbox / "filler.bin"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)   # fill the disk to the last byte
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        dropped = _drop(rig, "full")
        _check_held_then_done(rig, dropped, filler.unlink, "No space left on device",
                              "full disk on the outbox, freed later", record, t0)
    finally:
        if rig is not None:
            rig.close()
        subprocess.run(["umount", "-l", str(outbox)], capture_output=True)
