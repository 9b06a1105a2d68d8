"""What a user may wait for in vain, in `reverser status` and status.json, from a real service on real
folders: files left alone (a wrong name, a format not read, a folder) with the fix, training halves waiting
for their partner, training files refused; lists bounded beside their counts."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.images import make_image
from tests.support.pairs import tiny_champion
from tests.support.processes import PYTHON
from tests.support.rig import Rig, poll


@pytest.fixture
def rig(tmp_path, service_env):
    r = Rig(tmp_path / "svc", {"colorize": tiny_champion(tmp_path / "shipped" / "colorize")}, service_env,
            '[retrain]\npair_timeout_minutes = 30\n')
    yield r
    r.close()


def status(rig: Rig, *args: str) -> str:
    out = subprocess.run([PYTHON, "-m", "daemon", "status", "--config", str(rig.cfg_path), *args],
                         env=rig.env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def queue(rig: Rig) -> dict:
    return json.loads(status(rig, "--json"))["queues"]["colorize"]


def test_status_lists_files_left_alone_halves_waiting_and_refused_with_what_to_do(rig):
    rig.start()
    inbox, train = rig.inbox(), rig.cfg.train_inbox("colorize")
    make_image(inbox / "grandma.jpg")                           # the newcomer's mistake: no _before
    (inbox / "notes.txt").write_text("a list of names")         # a format not read
    (inbox / os.fsdecode(b"caf\xe9.png")).write_bytes(b"x")     # a name that is not UTF-8
    (inbox / "scans").mkdir()                                   # a folder: its files are not taken
    make_image(train / "cat_before.png", seed=1)                # half a pair
    (train / "dog_before.png").write_bytes(b"not a picture")    # a pair that cannot be used
    make_image(train / "dog_after.png", seed=2)

    def seen():
        c = queue(rig)
        return c if (c["ignored"]["count"] == 4 and c["halves_waiting"]["count"] == 1
                     and c["training_refused"]["count"] == 2) else None
    c = poll(seen, 30, "the three lists in status.json", rig)

    ignored = {e["name"]: e for e in c["ignored"]["files"]}
    assert set(ignored) == {"grandma.jpg", "notes.txt", "caf\\xe9.png", "scans"}
    assert ignored["grandma.jpg"]["reason"] == "the name is not NAME_before.<image ext>"
    assert ignored["grandma.jpg"]["fix"] == "rename it grandma_before.jpg" and ignored["grandma.jpg"]["where"] == "inbox"
    assert "the format .txt is not one read here" in ignored["notes.txt"]["reason"]
    assert "JPEG" in ignored["notes.txt"]["fix"] and "a folder" in ignored["scans"]["reason"]
    assert ignored["caf\\xe9.png"]["fix"] == "rename it caf\\xe9_before.png"
    half = c["halves_waiting"]["files"][0]
    assert (half["name"], half["waits_for"]) == ("cat_before.png", "cat_after.*")
    assert half["since"] and 0 <= half["waited_seconds"] and 0 < half["refused_in_seconds"] <= 30 * 60
    refused = {e["name"]: e for e in c["training_refused"]["files"]}     # both halves of the pair
    assert set(refused) == {"dog_before.png", "dog_after.png"} and "cannot be used" in refused["dog_after.png"]["reason"]

    text = status(rig)
    assert "colorize: files left alone in its inbox (not converted, not trained on): 4" in text
    assert "grandma.jpg: the name is not NAME_before.<image ext>; to fix: rename it grandma_before.jpg" in text
    assert "train/cat_before.png waits for cat_after.* since" in text and "refused in 29 min" in text
    assert "training files refused" in text and "dog_before.png" in text
    assert "\udce9" not in text and "\\xe9" in text

    # Put right, the file leaves the list (its rename is seen at once) and is converted.
    (inbox / "grandma.jpg").rename(inbox / "grandma_before.jpg")
    make_image(train / "cat_after.png", seed=1)
    poll(lambda: (q := queue(rig))["ignored"]["count"] == 3 and q["halves_waiting"]["count"] == 0, 30,
         "the fixed files to leave the lists", rig)
    poll(lambda: (rig.outbox() / "grandma_after.jpg").exists(), 30, "grandma's result", rig)

    # A restart lists the same files (the names kept in the state folder), without logging them again.
    rig.stop()
    rig.start()
    poll(lambda: queue(rig)["ignored"]["count"] == 3, 30, "the list after a restart", rig)
    assert "notes.txt" not in rig.current.log()


def test_a_folder_of_many_wrong_names_keeps_the_list_short_and_counts_them_all(rig):
    inbox = rig.inbox()
    inbox.mkdir(parents=True)
    for i in range(3000):
        (inbox / f"scan{i:05d}.jpg").write_bytes(b"")
    rig.start()
    # A hang guard, not a speed bar: a busy machine took over a minute to scan 3000 names.
    c = poll(lambda: (q := queue(rig))["ignored"]["count"] == 3000 and q, 600, "all 3000 counted", rig)
    assert len(c["ignored"]["files"]) == 20
    assert (rig.cfg.paths.state / "status.json").stat().st_size < 20_000
    assert "... and 2995 more (reverser status --json lists 20)" in status(rig)
