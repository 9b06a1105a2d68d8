"""The HTTP API of a real service: uploads come back done or failed with their reason, failed files are retried
or deleted, models promoted or rolled back, and /metrics and /api/status answer on the same port."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from daemon.learning.registry import Registry
from tests.support.images import make_image
from tests.support.service import wait_for


def picture(web, name: str, size=(96, 64), seed=0):
    return make_image(web.root / "src" / name, size, "L", seed=seed)


def upload(client, path, queue="colorize", filename=None):
    with open(path, "rb") as f:
        return client.post(f"/api/queues/{queue}/files", files={"file": (filename or path.name, f)})


def test_an_upload_comes_back_done_with_a_result_of_its_size(web):
    src = picture(web, "scan.png", (120, 80))
    with web.client() as c:
        r = upload(c, src)
        assert r.status_code == 202, r.text
        doc = r.json()
        assert doc["url"] == f"/api/files/{doc['id']}" and doc["name"] == "scan_before.png"
        done = web.wait_state(c, doc["id"], "done", "failed")
        assert done["state"] == "done", done
        result = c.get(done["result"])
        assert result.status_code == 200
        assert result.headers["cache-control"] == "no-store"
        im = Image.open(io_bytes(result.content))
        assert im.size == (120, 80) and im.mode == "RGB"
    assert (web.folder("outbox") / done["result_name"]).read_bytes() == result.content
    assert (web.folder("done") / "scan_before.png").read_bytes() == src.read_bytes()


def io_bytes(data: bytes):
    import io

    return io.BytesIO(data)


def test_a_corrupt_upload_comes_back_failed_with_its_reason_and_is_retried_then_deleted(web):
    bad = web.root / "src" / "torn.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    with web.client() as c:
        fid = upload(c, bad).json()["id"]
        failed = web.wait_state(c, fid, "done", "failed")
        assert failed["state"] == "failed" and "cannot decode image" in failed["reason"], failed
        assert (web.folder("failed") / "torn_before.jpg.reason.txt").exists()
        listed = c.get("/api/failed").json()["failed"]
        assert [f["id"] for f in listed if f["name"] == "torn_before.jpg"] == [fid]
        # Retry: back into the inbox through the claim path; it fails again, with its note written anew.
        again = c.post(f"/api/files/{fid}/retry")
        assert again.status_code == 202 and again.json()["id"] == fid
        assert c.get(f"/api/files/{fid}").json()["state"] in ("waiting", "working", "failed")
        assert web.wait_state(c, fid, "failed")["reason"]
        assert c.post(f"/api/files/{fid}/retry").status_code == 202   # and a third time, to delete it
        web.wait_state(c, fid, "failed")
        assert c.post(f"/api/files/{fid}/delete").status_code == 200
        assert c.get(f"/api/files/{fid}").status_code == 404
    assert not (web.folder("failed") / "torn_before.jpg").exists()
    assert not (web.folder("failed") / "torn_before.jpg.reason.txt").exists()
    assert web.service.log().count("torn_before.jpg failed:") == 3


def test_a_failed_file_dropped_by_hand_is_listed_and_retried(web):
    # Quarantined while nobody watched the web: the Failed list finds it in failed/ with its reason.
    (web.folder("inbox") / "hand_before.jpg").write_bytes(b"\xff\xd8 broken")
    wait_for(lambda: (web.folder("failed") / "hand_before.jpg.reason.txt").exists(), 60, "the quarantine",
             log=web.service.log)
    with web.client() as c:
        row = next(f for f in c.get("/api/failed").json()["failed"] if f["name"] == "hand_before.jpg")
        assert "cannot decode" in row["reason"] or "not" in row["reason"]
        shutil.copy(picture(web, "good.png"), web.folder("failed") / "hand_before.jpg")   # fixed by a person
        assert c.post(f"/api/files/{row['id']}/retry").status_code == 202
        assert web.wait_state(c, row["id"], "done", "failed")["state"] == "done"


def test_names_are_reduced_to_a_safe_base_name_and_numbered_on_a_collision(web):
    small, large = picture(web, "a.png", (64, 48), seed=1), picture(web, "b.png", (80, 40), seed=2)
    with web.client() as c:
        first = upload(c, small, filename="../../x/Old Photo 1.png").json()
        assert first["name"] == "Old_Photo_1_before.png"
        a = web.wait_state(c, first["id"], "done")
        second = upload(c, large, filename="Old Photo 1.png").json()
        b = web.wait_state(c, second["id"], "done")
        assert (a["result_name"], b["result_name"]) == ("Old_Photo_1_after.png", "Old_Photo_1_after-1.png")
        # Each id gives its own result, though the names collided in the outbox.
        assert Image.open(io_bytes(c.get(a["result"]).content)).size == (64, 48)
        assert Image.open(io_bytes(c.get(b["result"]).content)).size == (80, 40)


def test_uploads_obey_the_inbox_limits(web):
    with web.client() as c:
        r = c.post("/api/queues/colorize/files", files={"file": ("notes.txt", b"hello")})
        assert r.status_code == 415 and ".png" in r.json()["error"]
        big = b"\0" * 2_200_000   # [limits] max_file_mb = 2 in this service
        r = c.post("/api/queues/colorize/files", files={"file": ("big.png", big)})
        assert r.status_code == 413 and "max_file_mb" in r.json()["error"]
        r = c.post("/api/queues/nope/files", files={"file": ("a.png", b"x")})
        assert r.status_code == 404
        r = c.post("/api/queues/colorize/files", data={"other": "x"})
        assert r.status_code == 400 and "'file'" in r.json()["error"]
        # Over max_pixels: taken, then refused by the pipeline's own rule, with its reason.
        huge = make_image(web.root / "src" / "huge.png", (2100, 2000), "L")
        fid = upload(c, huge).json()["id"]
        failed = web.wait_state(c, fid, "failed", "done")
        assert failed["state"] == "failed" and "max_pixels" in failed["reason"], failed
    assert not list(web.folder("inbox").glob(".reverser-*")), "no temporary upload is left behind"


def test_status_is_what_reverser_status_json_prints_and_metrics_share_the_port(web):
    with web.client() as c:
        doc = c.get("/api/status").json()
        on_disk = json.loads((web.root / "var" / "status.json").read_text())
        assert doc.keys() == on_disk.keys() and doc["pid"] == on_disk["pid"] == web.service.proc.pid
        assert "colorize" in doc["queues"]
        m = c.get("/metrics")
        assert m.status_code == 200 and "reverser_files_processed_total" in m.text


def test_models_are_promoted_and_rolled_back_by_the_registrys_rules(web, tiny_models):
    reg = Registry(web.root / "var" / "models" / "colorize")
    with web.client() as c:
        versions = c.get("/api/queues/colorize/models").json()["versions"]
        assert [(v["version"], v["champion"]) for v in versions] == [(1, True)]
        r = c.post("/api/queues/colorize/models/1/promote")
        assert r.status_code == 409 and "already the champion" in r.json()["error"]
        r = c.post("/api/queues/colorize/models/rollback")
        assert r.status_code == 409 and "first of its line" in r.json()["error"]
        r = c.post("/api/queues/colorize/models/7/promote")
        assert r.status_code == 409 and "no version 7" in r.json()["error"]
        # A second version, as a training run registers one; promoted from the web, then rolled back.
        stage = reg.staging()
        for f in tiny_models["colorize"].iterdir():
            shutil.copy(f, stage / f.name)
        assert reg.add(stage, promote=False, who="test", why="a challenger", parent=1) == 2
        assert c.post("/api/queues/colorize/models/2/promote").status_code == 200
        assert reg.champion_version() == 2
        wait_for(lambda: c.get("/api/status").json()["queues"]["colorize"]["model"]["version"] == 2, 60,
                 "the service to swap version 2 in", log=web.service.log)
        r = c.post("/api/queues/colorize/models/rollback")
        assert r.status_code == 200 and "to version 1" in r.json()["message"]
        assert reg.champion_version() == 1
        assert reg.history()[-1]["who"].startswith("web (")


def test_train_now_runs_the_nightly_job_in_its_child_and_one_at_a_time(web):
    with web.client() as c:
        assert c.post("/api/queues/nope/train").status_code == 404
        r = c.post("/api/queues/colorize/train")
        assert r.status_code == 202, r.text
        assert c.post("/api/queues/colorize/train").status_code == 409   # one run at a time
        # No pairs filed in this service: the child fails, the run is recorded, the champion keeps serving.
        last = wait_for(lambda: c.get("/api/training").json()["queues"]["colorize"]["last"], 180,
                        "the training run to end", log=web.service.log)
        assert last["decision"] == "failed" and last["why"], last
        wait_for(lambda: not c.get("/api/training").json()["running"], 60, "the run's thread to end")
    assert "training failed, the champion (version" in web.service.log()
