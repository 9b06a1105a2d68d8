"""Color points through the HTTP API of a real service: an upload with a hints part, the live preview of a
done file, and its re-color as a new file; bad points, wrong queues and oversized bodies are refused."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.daemon.web.conftest import start_web
from tests.support.images import make_image

BLUE = "#2846f0"


@pytest.fixture(scope="module")
def web(tmp_path_factory, tiny_models):
    w = start_web(tmp_path_factory.mktemp("hints"), tiny_models)
    yield w
    w.service.stop()


def points(*pts) -> str:
    return json.dumps({"points": [{"x": x, "y": y, "color": c} for x, y, c in pts]})


def middle(data: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)
    h, w, _ = rgb.shape
    return rgb[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2].reshape(-1, 3).mean(0)


def is_blue(rgb) -> bool:
    r, g, b = rgb
    return b > r + 40 and b > g + 20


def done_upload(web, c, name, hints=None):
    src = make_image(web.root / "src" / name, (120, 80), "L", seed=3)
    data = {"hints": hints} if hints is not None else {}
    with open(src, "rb") as f:
        r = c.post("/api/queues/colorize/files", files={"file": (name, f)}, data=data)
    assert r.status_code == 202, r.text
    doc = web.wait_state(c, r.json()["id"], "done", "failed")
    assert doc["state"] == "done", doc
    return doc


def test_an_upload_with_a_hints_part_is_colored_with_them(web):
    with web.client() as c:
        doc = done_upload(web, c, "sea.png", points((0.5, 0.5, BLUE)))
        result = c.get(doc["result"]).content
    assert is_blue(middle(result)), middle(result)
    assert {"sea_before.png", "sea_hints.json"} <= {p.name for p in web.folder("done").iterdir()}


def test_a_preview_answers_the_live_view_and_hints_recolor_as_a_new_file(web):
    with web.client() as c:
        doc = done_upload(web, c, "sky.png")
        first = c.get(doc["result"]).content
        plain = c.post(f"/api/files/{doc['id']}/preview", content=b"")
        assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
        assert "solve;dur=" in plain.headers["server-timing"]
        live = c.post(f"/api/files/{doc['id']}/preview", content=points((0.5, 0.5, BLUE)))
        assert live.status_code == 200, live.text
        assert is_blue(middle(live.content)) and not is_blue(middle(plain.content))
        r = c.post(f"/api/files/{doc['id']}/hints", content=points((0.5, 0.5, BLUE)))
        assert r.status_code == 202, r.text
        new = r.json()
        assert new["id"] != doc["id"] and new["url"] == f"/api/files/{new['id']}"
        again = web.wait_state(c, new["id"], "done", "failed")
        assert again["state"] == "done", again
        assert again["result_name"] != doc["result_name"]
        full = c.get(again["result"]).content
        assert Image.open(io.BytesIO(full)).size == (120, 80) and is_blue(middle(full))
        assert c.get(doc["result"]).content == first   # the earlier result is still reachable, unchanged


def test_bad_points_wrong_queues_and_big_bodies_are_refused(web):
    with web.client() as c:
        doc = done_upload(web, c, "bad.png")
        r = c.post(f"/api/files/{doc['id']}/hints", content=points((1.5, 0.5, BLUE)))
        assert r.status_code == 400 and "bad hints" in r.json()["error"]
        assert c.post(f"/api/files/{doc['id']}/hints", content=b'{"points": []}').status_code == 400
        assert c.post(f"/api/files/{doc['id']}/preview", content=b"not json").status_code == 400
        assert c.post(f"/api/files/{doc['id']}/preview", content=b"x" * (2 << 20)).status_code == 413
        assert c.post("/api/files/AAAAAAAAAAAAAAAA/hints", content=points((0.5, 0.5, BLUE))).status_code == 404
        src = make_image(web.root / "src" / "rev.png", (60, 40), "RGB")
        with open(src, "rb") as f:
            r = c.post("/api/queues/reverse/files", files={"file": ("rev.png", f)},
                       data={"hints": points((0.5, 0.5, BLUE))})
        assert r.status_code == 400 and "does not colorize" in r.json()["error"]
        with open(src, "rb") as f:
            r = c.post("/api/queues/colorize/files", files={"file": ("x.png", f)}, data={"hints": "{"})
        assert r.status_code == 400 and "bad hints" in r.json()["error"]
