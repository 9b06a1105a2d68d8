"""The web API's file states after a kill -9: each upload ends done, failed or unknown (with its reason), never
"working" forever, and nothing is converted twice or lost.

A real `reverser run` child serves the API; the windows a kill must land in are held open by real faults,
which the child meets as root without its permission override (setpriv, as the outbox-fault tests do):
a read-only outbox holds a result (its input waits in work/), a read-only failed/ holds a quarantine, a
done/ that is a file holds an input in work/ after its result is written, and a read-only record file
keeps the web's line of where a file went off the disk, as a kill between the two would.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import httpx
import pytest
from PIL import Image

from tests.support.images import make_image
from tests.support.rig import Rig, poll, without_file_permission_override
from tests.support.service import names
from tests.support.net import free_port

NO_DAC = without_file_permission_override()
pytestmark = pytest.mark.skipif(NO_DAC is None, reason="the service would run as root, which writes into "
                                                       "read-only folders (setpriv is missing)")


class WebRig(Rig):
    """A Rig whose service serves the web API on a free loopback port (colorize and reverse queues)."""

    def __init__(self, root, tiny_models, env):
        self.port = free_port()
        super().__init__(root, {"colorize": tiny_models["colorize"], "reverse": tiny_models["reverse"]}, env,
                         f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {self.port}\n', prefix=NO_DAC)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    @property
    def records(self):
        return self.cfg.paths.state / "web" / "files.jsonl"

    def on_disk(self, fid: str) -> dict:
        """The record's last line in the record file: what a restart reads."""
        return [r for r in map(json.loads, self.records.read_text().splitlines()) if r.get("id") == fid][-1]

    def upload(self, c: httpx.Client, path, queue="colorize") -> str:
        with open(path, "rb") as f:
            r = c.post(f"/api/queues/{queue}/files", files={"file": (path.name, f)})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def state(self, c: httpx.Client, fid: str, *states: str) -> dict:
        def got():
            doc = c.get(f"/api/files/{fid}").json()
            return doc if doc.get("state") in states else None
        return poll(got, 60, f"file {fid} to be {' or '.join(states)}", self)

    def results(self, q="colorize") -> list[str]:
        return [n for n in names(self.outbox(q)) if not n.startswith(".")]


def hidden(folder) -> list[str]:
    return [n for n in names(folder) if n.startswith(".")]


def test_a_result_written_just_before_a_kill_9_is_done_after_the_restart_and_a_torn_one_is_made_once(
        tmp_path, tiny_models, service_env):
    rig = WebRig(tmp_path, tiny_models, service_env)
    src = make_image(tmp_path / "src" / "scan.png", (72, 48), "L", seed=3)
    torn_src = make_image(tmp_path / "src" / "plate.png", (64, 40), "L", seed=4)
    try:
        rig.start()
        with rig.client() as c:
            for q in ("colorize", "reverse"):
                rig.outbox(q).mkdir(parents=True, exist_ok=True)
                os.chmod(rig.outbox(q), 0o555)   # results held: the uploads wait in work/
            scan, plate = rig.upload(c, src), rig.upload(c, torn_src, "reverse")
            poll(lambda: len(names(rig.work())) == 1 and len(names(rig.work("reverse"))) == 1 and
                 rig.log().count("cannot write results into") == 2, 60, "both results held", rig)
            # The window of scan: done/ takes no input, so its result is written and its input stays in
            # work/; the record file takes no line, so the web hears where it went only in memory.
            shutil.rmtree(rig.done(), ignore_errors=True)
            rig.done().parent.mkdir(parents=True, exist_ok=True)
            rig.done().write_text("a file where the done folder should be\n")
            os.chmod(rig.records, 0o444)
            os.chmod(rig.outbox(), 0o755)
            poll(lambda: rig.results() and "cannot be moved into" in rig.log() and "web: cannot write" in rig.log(),
                 60, "scan's result written, its input kept in work/, its line not written", rig)
            assert c.get(f"/api/files/{scan}").json()["state"] == "done"   # in memory only
        rig.kill9()
        assert rig.on_disk(scan)["state"] == "waiting", "the kill came before the web's line was written"
        assert len(names(rig.work())) == 1 and hidden(rig.outbox()) != [], "the input in work/, its receipt kept"
        # plate was killed while its result was being written: what that leaves is a torn receipt (the
        # result's temporary name, one link) beside its claim in work/.
        ticket = names(rig.work("reverse"))[0].partition("@")[0]
        (rig.outbox("reverse") / f".reverser-receipt-{ticket}").write_bytes(torn_src.read_bytes()[:200])
        os.chmod(rig.outbox("reverse"), 0o755)
        os.chmod(rig.records, 0o644)
        rig.done().unlink()
        rig.start()
        with rig.client() as c:
            done = rig.state(c, scan, "done", "failed", "unknown")
            assert done["state"] == "done" and done["result_name"] == "scan_after.png", done
            got = c.get(done["result"])
            assert got.status_code == 200 and got.content == (rig.outbox() / "scan_after.png").read_bytes()
            assert Image.open(io.BytesIO(got.content)).size == (72, 48)
            assert [r["id"] for r in c.get("/api/results").json()["results"] if r["queue"] == "colorize"] == [scan]
            assert c.get(f"/thumbs/{scan}/before.jpg").status_code == 200, "its input is known in done/"
            again = rig.state(c, plate, "done", "failed", "unknown")
            assert again["state"] == "done" and again["result_name"] == "plate_after.png", again
            assert Image.open(io.BytesIO(c.get(again["result"]).content)).size == (64, 40)
            # Both count as processed since the start: scan's result by the run that died before counting it.
            def counted():   # the status is written every interval_seconds
                q = c.get("/api/status").json()["queues"]
                return q if q["reverse"]["working"] == 0 and q["reverse"]["processed"] else None
            counts = poll(counted, 30, "the status to count plate", rig)
            assert counts["colorize"]["processed"] == 1 and counts["reverse"]["processed"] == 1, counts
            metrics = c.get("/metrics").text
            assert 'reverser_files_processed_total{queue="colorize"} 1.0' in metrics
        assert rig.stop() == 0
    finally:
        for q in ("colorize", "reverse"):
            if rig.outbox(q).exists():
                os.chmod(rig.outbox(q), 0o755)
        rig.close()
    log = rig.runs[1].log()
    assert "scan_before.png was converted before the last stop" in log and "plate_before.png" in log
    assert rig.results() == ["scan_after.png"] and rig.results("reverse") == ["plate_after.png"], "each made once"
    assert names(rig.done()) == ["scan_before.png"] and (rig.done() / "scan_before.png").read_bytes() == src.read_bytes()
    for q in ("colorize", "reverse"):
        assert names(rig.work(q)) == [] and hidden(rig.outbox(q)) == [], "no claim, receipt or temporary file left"


def test_files_finished_after_their_input_left_work_are_settled_from_the_folders(tmp_path, tiny_models,
                                                                                 service_env):
    rig = WebRig(tmp_path, tiny_models, service_env)
    good = make_image(tmp_path / "src" / "good.png", (80, 56), "L", seed=5)
    gone = make_image(tmp_path / "src" / "gone.png", (64, 48), "L", seed=6)
    torn = tmp_path / "src" / "torn.jpg"
    torn.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    try:
        rig.start()
        with rig.client() as c:
            rig.failed().mkdir(parents=True, exist_ok=True)
            os.chmod(rig.failed(), 0o555)    # a quarantine held: its input waits in work/
            os.chmod(rig.outbox(), 0o555)    # results held
            ids = {p.name: rig.upload(c, p) for p in (good, gone, torn)}
            poll(lambda: len(names(rig.work())) == 3 and "cannot be moved into" in rig.log(), 60,
                 "all three held in work/", rig)
            # Each is finished, its input moved on, and the web's line of it never reaches the disk: as a
            # kill -9 between the two, or a power cut taking the unflushed line, leaves them.
            os.chmod(rig.records, 0o444)
            os.chmod(rig.failed(), 0o755)
            os.chmod(rig.outbox(), 0o755)
            poll(lambda: len(names(rig.done())) == 2 and (rig.failed() / "torn_before.jpg.reason.txt").exists(),
                 60, "the three finished", rig)
            poll(lambda: all(c.get(f"/api/files/{i}").json()["state"] in ("done", "failed") for i in ids.values()),
                 30, "the web told, in memory", rig)
        rig.kill9()
        assert {rig.on_disk(i)["state"] for i in ids.values()} == {"waiting"}
        os.chmod(rig.records, 0o644)
        (rig.outbox() / "gone_after.png").unlink()     # a result moved away by hand meanwhile
        rig.start()
        with rig.client() as c:
            first = rig.state(c, ids["good.png"], "done", "failed", "unknown")
            assert first["state"] == "done" and first["result_name"] == "good_after.png", first
            assert c.get(first["result"]).content == (rig.outbox() / "good_after.png").read_bytes()
            assert c.get(f"/thumbs/{ids['good.png']}/before.jpg").status_code == 200
            failed = rig.state(c, ids["torn.jpg"], "done", "failed", "unknown")
            assert failed["state"] == "failed" and "cannot decode" in failed["reason"], failed
            listed = [f["id"] for f in c.get("/api/failed").json()["failed"] if f["name"] == "torn_before.jpg"]
            assert listed == [ids["torn.jpg"]], "the Failed list shows the upload's own record, once"
            lost = rig.state(c, ids["gone.png"], "done", "failed", "unknown")
            assert lost["state"] == "unknown" and "gone_before.png" in lost["reason"] and \
                "no result of it" in lost["reason"], lost
            assert c.get(f"/api/files/{ids['gone.png']}/result").status_code == 404
        assert rig.stop() == 0
        # A second restart finds them as the first left them, with no new lines.
        lines = len(rig.records.read_text().splitlines())
        rig.start()
        with rig.client() as c:
            assert [c.get(f"/api/files/{ids[n]}").json()["state"] for n in ("good.png", "torn.jpg", "gone.png")] \
                == ["done", "failed", "unknown"]
        assert rig.stop() == 0
        assert len(rig.records.read_text().splitlines()) == lines
    finally:
        for d in (rig.outbox(), rig.failed()):
            if d.exists():
                os.chmod(d, 0o755)
        rig.close()
    assert rig.results() == ["good_after.png"] and names(rig.work()) == []
