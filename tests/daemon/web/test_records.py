"""Records that follow their files, not their names, under concurrent requests: the web server (uvicorn on a
real socket, in this process) over a file index on real folders; the service's side (a claim into work/, a
result written, the input moved on, the report) is done here by the same moves the service makes.

    an upload never takes a name a file in work/ has, and a same-named file's report never settles it
    of eight Retries at once one wins; a Retry and a Delete at once leave the file in one place
    an id whose result, kept input or failed input was replaced by another file's answers 404 or unknown
    the failed list is paged, and the ids of a page are never forgotten while it is listed
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from daemon.core.config import Config, parse_config
from daemon.core.fs import move_into
from daemon.core.quarantine import quarantine
from daemon.web.files import KEEP, FileIndex
from daemon.web.server import WebContext, WebServer, create_app
from tests.support.net import free_port
from tests.support.images import make_image

Q = "colorize"


@dataclass
class Served:
    cfg: Config
    index: FileIndex
    server: WebServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.server.port}", timeout=60)

    def page(self, path: str) -> httpx.Response:
        """A page or picture, as a browser gets it (its session cookie kept apart from the API client's)."""
        with self.client() as c:
            return c.get(path)

    def call(self, request, *args) -> httpx.Response:
        """request(client, *args) from a client of its own: each thread is a client, as browsers are."""
        with self.client() as c:
            return request(c, *args)

    def folder(self, kind: str) -> Path:
        return {"inbox": self.cfg.inbox(Q), "outbox": self.cfg.outbox(Q), "failed": self.cfg.failed(Q),
                "done": self.cfg.state_dir("done", Q), "work": self.cfg.state_dir("work", Q)}[kind]


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(keep: int = KEEP) -> Served:
        raw = {"paths": {"inbox": "in", "outbox": "out", "state": "var"},
               "queues": {Q: {"task": "colorize", "model": "m"}},
               # 200 clients at once, each a connection: the cap (200 by default) would refuse one whose
               # predecessor's close the server has not yet seen, which is the cap's test, not this file's
               "web": {"enabled": True, "host": "127.0.0.1", "port": free_port(), "max_connections": 1000}}
        cfg = parse_config(raw, base=tmp_path)
        index = FileIndex(cfg, keep)
        server = WebServer(cfg).bind().start(create_app(WebContext(cfg, index)))
        started.append(server)
        for kind in ("inbox", "outbox", "failed", "done", "work"):
            Served(cfg, index, server).folder(kind).mkdir(parents=True, exist_ok=True)
        return Served(cfg, index, server)
    yield start
    for server in started:
        server.stop()


def at_once(n: int, call) -> list:
    """call(i) from n threads released together; what each returned."""
    gate, out = threading.Barrier(n), [None] * n

    def run(i):
        gate.wait()
        out[i] = call(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def claim(s: Served, name: str, ticket: str) -> Path:
    """The service's claim: the inbox file renamed into work/ under a ticket (it keeps its inode)."""
    claimed = s.folder("work") / f"{ticket}@{name}"
    os.rename(s.folder("inbox") / name, claimed)
    return claimed


def convert(s: Served, claimed: Path, name: str, result: bytes) -> tuple[Path, Path]:
    """The service's finish of a claimed file: its result written (numbered on a collision), its input moved
    to done/, and the report the feed makes (with the claimed file's identity)."""
    st = os.lstat(claimed)
    out = move_into(write(s.cfg.paths.state / "tmp-result", result), s.folder("outbox"), name.replace(
        "_before", "_after"))
    kept = move_into(claimed, s.folder("done"), name)
    s.index.placed(Q, name, out, kept, "", claimed=(st.st_dev, st.st_ino))
    return out, kept


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fail(s: Served, name: str, data: bytes = b"\xff\xd8 torn") -> Path:
    """A file the service quarantined into failed/ with its reason note."""
    src = write(s.cfg.paths.state / "tmp-failed", data)
    return quarantine(src, s.folder("failed"), name, "cannot decode image: torn", queue=Q, inbox=s.folder("inbox"))


def upload(c: httpx.Client, filename: str, data: bytes) -> httpx.Response:
    return c.post(f"/api/queues/{Q}/files", files={"file": (filename, data)})


def test_an_upload_never_takes_the_name_of_a_file_in_work_and_a_same_named_file_never_settles_it(serve):
    s = serve()
    with s.client() as c:
        # A file dropped by hand as scan_before.png is being converted (in work/): an upload of scan.png
        # is another file, under another name, and each id ends with its own result.
        write(s.folder("inbox") / "scan_before.png", b"dropped by hand")
        hand = claim(s, "scan_before.png", "1700000000-aa-1")
        up = upload(c, "scan.png", b"uploaded").json()
        assert up["name"] == "scan-1_before.png"
        convert(s, hand, "scan_before.png", b"the hand drop's result")
        assert c.get(f"/api/files/{up['id']}").json()["state"] == "waiting"
        convert(s, claim(s, up["name"], "1700000000-aa-2"), up["name"], b"the upload's result")
        assert c.get(f"/api/files/{up['id']}/result").content == b"the upload's result"

        # The reverse: the upload is in work/ when a hand drop of its name arrives and finishes first.
        up = upload(c, "photo.png", b"uploaded photo").json()
        assert up["name"] == "photo_before.png"
        mine = claim(s, up["name"], "1700000000-aa-3")
        write(s.folder("inbox") / "photo_before.png", b"a hand drop of the same name")
        convert(s, claim(s, "photo_before.png", "1700000000-aa-4"), "photo_before.png", b"the hand drop's")
        assert c.get(f"/api/files/{up['id']}").json()["state"] == "working", "not the hand drop's result"
        convert(s, mine, "photo_before.png", b"the photo's result")
        got = c.get(f"/api/files/{up['id']}").json()
        assert got["state"] == "done" and got["result_name"] == "photo_after-1.png"
        assert c.get(got["result"]).content == b"the photo's result"
        listed = c.get("/api/results").json()["results"]
        assert sorted(r["result_name"] for r in listed) == ["photo_after-1.png", "photo_after.png",
                                                            "scan-1_after.png", "scan_after.png"]


def test_200_concurrent_uploads_of_one_name_each_get_a_name_and_record_of_their_own(serve):
    s = serve()
    got = at_once(200, lambda i: s.call(upload, "same.png", f"upload {i}".encode()))
    assert [r.status_code for r in got] == [202] * 200
    docs = [r.json() for r in got]
    assert len({d["name"] for d in docs}) == 200 and len({d["id"] for d in docs}) == 200
    for i, d in enumerate(docs):
        assert (s.folder("inbox") / d["name"]).read_bytes() == f"upload {i}".encode()
        assert s.index.records[d["id"]]["name"] == d["name"]


def failed_id(c: httpx.Client, name: str) -> str:
    return next(r["id"] for r in c.get("/api/failed").json()["failed"] if r["name"] == name)


def test_eight_retries_at_once_put_the_file_into_the_inbox_once(serve):
    s = serve()
    with s.client() as c:
        for n in range(20):
            name = f"torn{n}_before.jpg"
            fail(s, name)
            fid = failed_id(c, name)
            got = at_once(8, lambda i: s.call(httpx.Client.post, f"/api/files/{fid}/retry"))
            assert sorted(r.status_code for r in got) == [202] + [409] * 7, [r.text for r in got]
            assert os.listdir(s.folder("inbox")) == [name]
            assert os.listdir(s.folder("failed")) == []
            assert c.get(f"/api/files/{fid}").json()["state"] == "waiting"
            (s.folder("inbox") / name).unlink()


def test_a_retry_and_a_delete_at_once_leave_the_file_in_exactly_one_place(serve):
    s = serve()
    with s.client() as c:
        for n in range(30):
            name = f"t{n}_before.jpg"
            fail(s, name)
            fid = failed_id(c, name)
            retry, delete = at_once(2, lambda i: s.call(httpx.Client.post, f"/api/files/{fid}/{('retry', 'delete')[i]}"))
            codes = (retry.status_code, delete.status_code)
            assert codes in ((202, 409), (409, 200), (404, 200)), (codes, retry.text, delete.text)   # 404: deleted first
            in_inbox, in_failed = (s.folder("inbox") / name).exists(), (s.folder("failed") / name).exists()
            assert (in_inbox, in_failed) == ((True, False) if codes[0] == 202 else (False, False))
            (s.folder("inbox") / name).unlink(missing_ok=True)
    assert not [n for n in os.listdir(s.folder("failed")) if n.startswith(".")], "nothing staged is left"


def test_an_id_whose_file_was_replaced_by_another_of_its_name_never_shows_that_file(serve):
    s = serve()
    src = s.cfg.paths.state / "src"
    with s.client() as c:
        first = upload(c, "scan.png", make_image(src / "a.png", (64, 48), "L").read_bytes()).json()
        result, kept = convert(s, claim(s, first["name"], "1700000000-bb-1"), first["name"],
                               make_image(src / "ra.png", (64, 48)).read_bytes())
        assert c.get(f"/api/files/{first['id']}/result").status_code == 200
        assert s.page(f"/view/{first['id']}/before").status_code == 200
        # A consumer takes the result out of the outbox, the done/ sweep removes the input; a new upload
        # of the same name is converted into the same names.
        result.unlink()
        kept.unlink()
        second = upload(c, "scan.png", make_image(src / "b.png", (80, 40), "L", seed=2).read_bytes())
        assert second.status_code == 202, second.text
        second = second.json()
        convert(s, claim(s, second["name"], "1700000000-bb-2"), second["name"],
                make_image(src / "rb.png", (80, 40), seed=2).read_bytes())
        assert (s.folder("outbox") / "scan_after.png").exists() and (s.folder("done") / "scan_before.png").exists()
        assert c.get(f"/api/files/{first['id']}/result").status_code == 404
        assert s.page(f"/view/{first['id']}/before").status_code == 404
        assert s.page(f"/thumbs/{first['id']}/after.jpg").status_code == 404
        assert c.get(f"/api/files/{second['id']}/result").content == (s.folder("outbox") / "scan_after.png").read_bytes()

        # A failed input deleted by hand, and a new failure of its name: a new id, and the old one's Delete
        # removes nothing.
        fail(s, "x_before.jpg", b"the first")
        old = failed_id(c, "x_before.jpg")
        for n in ("x_before.jpg", "x_before.jpg.reason.txt"):
            (s.folder("failed") / n).unlink()
        fail(s, "x_before.jpg", b"the second, another file")
        new = failed_id(c, "x_before.jpg")
        assert new != old
        assert c.get(f"/api/files/{old}").json()["state"] == "unknown"
        assert c.post(f"/api/files/{old}/delete").status_code == 409
        assert (s.folder("failed") / "x_before.jpg").read_bytes() == b"the second, another file"
        assert c.post(f"/api/files/{new}/delete").status_code == 200
        assert not (s.folder("failed") / "x_before.jpg").exists()


def test_more_failed_inputs_than_the_index_keeps_are_listed_a_page_at_a_time(serve):
    s = serve(keep=40)
    names = [f"f{i:03d}_before.jpg" for i in range(100)]
    for n in names:
        fail(s, n)
    seen = []
    with s.client() as c:
        first = c.get("/api/failed")
        assert first.status_code == 200 and first.json()["total"] == 100
        offset = 0
        while True:
            page = c.get(f"/api/failed?offset={offset}&limit=15").json()
            assert page["total"] == 100
            if not page["failed"]:
                break
            for r in page["failed"]:   # every id of the page answers, and its file is there to retry
                assert c.get(f"/api/files/{r['id']}").json()["state"] == "failed"
            seen += [r["name"] for r in page["failed"]]
            offset += len(page["failed"])
        assert sorted(seen) == names and len(seen) == 100
        assert c.get("/api/failed?limit=x").status_code == 400
        html = c.get("/failed?page=1").text
        assert "of 5" in html and "100 failed inputs" in html   # 20 a page: half of what the index keeps
