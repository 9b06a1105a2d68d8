"""What a newcomer looks for on the dashboard of a real service: the results a run without the web made, the
files its inbox leaves alone (with their fix), and training refusals that follow what is still there."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.daemon.web.conftest import start_web
from tests.support.images import make_image
from tests.support.processes import PYTHON, child_env
from tests.support.service import wait_for


def reverser_status(web) -> str:
    out = subprocess.run([PYTHON, "-m", "daemon", "status", "--config", str(web.config)], env=child_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def web(tmp_path, tiny_models):
    w = start_web(tmp_path, {"colorize": tiny_models["colorize"]})
    yield w
    w.service.stop()


def test_results_made_before_the_web_was_turned_on_are_listed_newest_first(tmp_path, tiny_models):
    # 24 files converted by a run with the web off: their results in the outbox, their inputs in done/.
    outbox, done = tmp_path / "outbox" / "colorize", tmp_path / "var" / "done" / "colorize"
    now = time.time()
    for i in range(24):
        make_image(done / f"old{i:02d}_before.png", (48, 32), "L", seed=i)
        make_image(outbox / f"old{i:02d}_after.png", (48, 32), seed=i)
        for p in (done / f"old{i:02d}_before.png", outbox / f"old{i:02d}_after.png"):
            os.utime(p, (now - 3600 + 10 * i,) * 2)
    web = start_web(tmp_path, {"colorize": tiny_models["colorize"]})
    try:
        with web.client() as c:
            doc = wait_for(lambda: (d := c.get("/api/results").json())["total"] == 24 and d, 60,
                           "the earlier results to be listed", log=web.service.log)
            newest = doc["results"][0]
            assert [r["result_name"] for r in doc["results"][:3]] == [f"old{i}_after.png" for i in (23, 22, 21)]
            assert c.get(newest["result"]).content == (outbox / "old23_after.png").read_bytes()
            assert c.get(f"/api/files/{newest['id']}").json()["name"] == "old23_before.png"
    finally:
        web.service.stop()


def test_files_the_inbox_leaves_alone_are_on_the_dashboard_with_their_fix(web):
    make_image(web.folder("inbox") / "grandma.jpg")   # a newcomer's file without _before
    with web.client() as c:
        left = wait_for(lambda: (q := c.get("/api/inbox/left-alone").json()["queues"]["colorize"])["count"]
                        and q, 60, "grandma.jpg to be left alone", log=web.service.log)
        assert [(e["name"], e["fix"]) for e in left["files"]] == [("grandma.jpg", "rename it grandma_before.jpg")]
        page = c.get("/").text
    assert "grandma.jpg" in page and "rename it grandma_before.jpg" in page


def test_training_refusals_deleted_from_the_failed_page_are_no_longer_counted(web):
    # A training pair that cannot be used: both halves refused; deleted from the Failed page one by one,
    # the Training page and `reverser status` count what is still there, and name it.
    train = web.folder("inbox") / "train"
    (train / "dog_before.png").write_bytes(b"not a picture")
    make_image(train / "dog_after.png", seed=2)
    with web.client() as c:
        wait_for(lambda: c.get("/api/training").json()["queues"]["colorize"]["refused"] == 2, 60,
                 "the pair to be refused", log=web.service.log)
        rows = [r for r in c.get("/api/failed").json()["failed"] if r["name"].startswith("dog_")]
        assert len(rows) == 2
        assert c.post(f"/api/files/{rows[0]['id']}/delete").status_code == 200
        wait_for(lambda: c.get("/api/training").json()["queues"]["colorize"]["refused"] == 1, 60,
                 "the count to follow the delete", log=web.service.log)
        text = reverser_status(web)
        assert "training files refused (they are in failed/ with a reason note): 1" in text, text
        assert "more" not in text and rows[1]["name"] in text
        assert c.post(f"/api/files/{rows[1]['id']}/delete").status_code == 200
        wait_for(lambda: c.get("/api/training").json()["queues"]["colorize"]["refused"] == 0, 60,
                 "the count to follow the second delete", log=web.service.log)
    assert "training files refused" not in reverser_status(web)
