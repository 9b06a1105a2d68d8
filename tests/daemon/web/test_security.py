"""Nobody gets in where they don't belong: the token, the pages' cookie, cross-site refusals, file routes by id
only, the response headers, and a configuration that would expose the server without a token exits 78."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

import daemon.web

from tests.daemon.web.conftest import TOKEN
from tests.support.net import free_port
from tests.support.config import merge_sections, write_config
from tests.support.images import make_image
from tests.support.processes import PYTHON, child_env
from tests.support.rig import QUICK
from tests.support.service import Service, wait_for


def done_upload(w, c) -> dict:
    src = make_image(w.root / "src" / "p.png", (64, 48), "L")
    with open(src, "rb") as f:
        fid = c.post("/api/queues/colorize/files", files={"file": ("p.png", f)}).json()["id"]
    return w.wait_state(c, fid, "done")


# -- with a token --

def test_every_api_call_needs_the_bearer_token(guarded):
    with guarded.client() as c:
        for method, path in [("GET", "/api/status"), ("GET", "/api/failed"), ("GET", "/metrics"),
                             ("POST", "/api/queues/colorize/files"), ("POST", "/api/queues/colorize/train"),
                             ("POST", "/api/queues/colorize/models/rollback")]:
            r = c.request(method, path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/status", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        assert c.get("/api/status", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    with guarded.client(TOKEN) as c:
        assert c.get("/api/status").status_code == 200
        assert c.get("/metrics").status_code == 200
        done_upload(guarded, c)   # a POST with the token needs no Origin and no CSRF token


def test_pages_take_the_token_once_and_keep_it_in_a_strict_httponly_cookie(guarded):
    with guarded.client(follow_redirects=False) as c:
        r = c.get("/")
        assert r.status_code == 401 and 'name="token"' in r.text
        assert c.post("/login", data={"token": "not-it"}).status_code == 401
        r = c.post("/login", data={"token": TOKEN})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict"), cookie
        assert c.get("/").status_code == 200
        assert c.get("/api/status").status_code == 200   # the page's own polling rides on the cookie


def test_a_page_session_cannot_change_state_without_its_csrf_token_or_from_another_origin(guarded):
    with guarded.client(follow_redirects=False) as c:
        c.post("/login", data={"token": TOKEN})
        page = c.get("/failed").text
        csrf = page.split('name="csrf" content="')[1].split('"')[0]
        here = {"Origin": guarded.url}
        r = c.post("/api/queues/colorize/models/rollback", headers=here)
        assert r.status_code == 403 and "CSRF" in r.json()["error"]
        r = c.post("/api/queues/colorize/models/rollback", headers={"Origin": "http://evil.example",
                                                                   "X-CSRF-Token": csrf})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        r = c.post("/api/queues/colorize/models/rollback", headers={"X-CSRF-Token": csrf})   # no Origin at all
        assert r.status_code == 403
        r = c.post("/api/queues/colorize/models/rollback", headers={**here, "X-CSRF-Token": csrf})
        assert r.status_code == 409 and "first of its line" in r.json()["error"]   # let through: the registry's no
        # A page's form: the csrf field.
        assert c.post("/models/colorize/rollback", headers=here, data={"csrf": "forged"}).status_code == 403
        r = c.post("/models/colorize/rollback", headers=here, data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/models"
        assert "first of its line" in c.get("/models").text   # said once on the page it went back to



def _from(w, addr: str, **kw) -> httpx.Client:
    """A client whose connections come from addr (any 127.x address is this machine's loopback)."""
    return httpx.Client(base_url=w.url, timeout=60, transport=httpx.HTTPTransport(local_address=addr), **kw)


def test_wrong_tokens_lock_their_address_out_of_login_and_bearer_alike_and_say_so_once(guarded):
    free = 5   # security.FREE_MISSES: the wrong tokens an address may send before its lock-out
    with _from(guarded, "127.0.0.3", follow_redirects=False) as guesser:
        answers = [guesser.post("/login", data={"token": f"guess-{i}"}).status_code for i in range(free)]
        assert answers == [401] * free
        locked = [guesser.post("/login", data={"token": f"more-{i}"}) for i in range(20)]
        assert {r.status_code for r in locked} == {429}
        assert all(int(r.headers["retry-after"]) > 0 for r in locked)
        # The Bearer path shares the lock-out, and a right token from there is refused too while it lasts.
        r = guesser.get("/api/status", headers={"Authorization": "Bearer wrong-again-wrong-again"})
        assert r.status_code == 429 and "try again" in r.json()["error"]
        assert guesser.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 429
        assert guesser.post("/login", data={"token": TOKEN}).status_code == 429
    with _from(guarded, "127.0.0.1", follow_redirects=False) as someone:   # another address is not held up
        assert someone.post("/login", data={"token": TOKEN}).status_code == 303
        assert someone.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    lines = [line for line in guarded.service.log().splitlines() if "wrong tokens from 127.0.0.3" in line]
    assert len(lines) == 1, lines


# -- without a token (the loopback default) --

def test_cross_site_requests_and_foreign_host_names_are_refused(web):
    with web.client() as c:
        r = c.post("/api/queues/colorize/models/rollback", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = c.post("/api/queues/colorize/models/rollback", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = c.post("/api/queues/colorize/models/rollback", headers={"Referer": "http://evil.example/page"})
        assert r.status_code == 403
        # DNS rebinding: a page of evil.example resolved to 127.0.0.1 is same-origin to itself, but not a
        # loopback name.
        r = c.get("/api/status", headers={"Host": f"evil.example:{web.url.rsplit(':', 1)[1]}"})
        assert r.status_code == 403
        assert c.get("/api/status", headers={"Host": "localhost"}).status_code == 200


def test_file_routes_answer_by_id_only(web):
    with web.client() as c:
        done = done_upload(web, c)
        fid = done["id"]
        for path in ["/api/files/..%2F..%2Fstatus.json/result", "/api/files/%2Fetc%2Fpasswd/result",
                     "/api/files/../../var/status.json", "/api/files/..%2f..%2fetc%2fpasswd",
                     f"/api/files/{fid}%2F..%2F..%2Fstatus.json/result", "/api/files/%2e%2e/result",
                     "/thumbs/..%2F..%2Fstatus/after.jpg", f"/thumbs/{fid}/..%2F..%2Fetc.jpg",
                     "/view/%2Fetc%2Fpasswd/after", "/reports/colorize/..%2F..%2F/report.png",
                     "/static/..%2F..%2Fservice.py", "/static/../files.py"]:
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
        # A link planted in the outbox under the result's name is not followed.
        result = web.folder("outbox") / done["result_name"]
        result.unlink()
        os.symlink("/etc/passwd", result)
        assert c.get(done["result"]).status_code == 404
        assert c.get(f"/view/{fid}/after").status_code == 404


def test_responses_carry_the_security_headers(web):
    with web.client() as c:
        fid = done_upload(web, c)["id"]   # before a page's session cookie, which would need an Origin
        for path in ["/", "/api/status", "/static/app.js", "/api/files/nope"]:
            r = c.get(path)
            assert r.headers["x-content-type-options"] == "nosniff"
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
        assert c.get("/api/status").headers["cache-control"] == "no-store"
        # A picture opened by itself may use its viewer's inline style, and nothing else.
        csp = c.get("/favicon.ico", follow_redirects=True).headers["content-security-policy"]
        assert "script-src 'self'" in csp   # an SVG can hold script: the pages' policy
        r = c.get(f"/view/{fid}/after")
        assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"].startswith("default-src 'none'; img-src 'self';")
        page = c.get("/").text
        assert "<script>" not in page and "style=" not in page and "http" not in page.split("<body")[0]


def test_pages_name_static_files_by_their_content_so_a_browser_may_keep_them(web):
    static = Path(daemon.web.__file__).parent / "static"
    with web.client() as c:
        page = c.get("/").text
        for name in ["app.js", "app.css", "favicon.svg"]:
            body = (static / name).read_bytes()
            url = f"/static/{name}?v={hashlib.sha256(body).hexdigest()[:12]}"
            assert f'"{url}"' in page, name
            r = c.get(url)
            assert r.status_code == 200 and r.content == body
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        # Named without its hash (an old bookmark, a program): asked again each time, answered 304 if unchanged.
        r = c.get("/static/app.js")
        assert r.headers["cache-control"] == "no-cache"
        assert c.get("/static/app.js", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        r = c.get("/static/gone.js?v=0123456789ab")
        assert r.status_code == 404 and "immutable" not in r.headers.get("cache-control", "")


# -- configuration: exit 78 --

def check(config):
    return subprocess.run([PYTHON, "-m", "daemon", "check", "--config", str(config)], env=child_env(),
                          capture_output=True, text=True, timeout=300)


def run_child(config):
    return subprocess.run([PYTHON, "-m", "daemon", "run", "--config", str(config)], env=child_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("web_text, key, phrase", [
    ('host = "0.0.0.0"\n', "[web] token", "not a loopback address"),
    ('host = "0.0.0.0"\ntoken = "short"\n', "[web] token", "too weak"),
])
def test_a_reachable_server_without_a_real_token_exits_78(tmp_path, tiny_models, web_text, key, phrase):
    config = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                          merge_sections(QUICK, "[web]\nenabled = true\n" + web_text))
    for r in (check(config), run_child(config)):
        assert r.returncode == 78, r.stderr
        assert key in r.stderr and phrase in r.stderr, r.stderr
        assert "short" not in r.stderr, "the token itself is never printed"
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "var" / "status.json").exists(), "nothing started"


def test_a_port_in_use_exits_78_naming_the_key(tmp_path, tiny_models):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        config = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                              merge_sections(QUICK, f"[web]\nenabled = true\nport = {port}\n"))
        r = run_child(config)
    assert r.returncode == 78, r.stderr
    assert "[web] port" in r.stderr and f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_reload_that_changes_web_rebinds(tmp_path, tiny_models):
    old, new = free_port(), free_port()
    models = {"colorize": tiny_models["colorize"]}
    config = write_config(tmp_path, models, merge_sections(QUICK, f"[web]\nenabled = true\nport = {old}\n"))
    s = Service(config, child_env(), tmp_path / "service.log").wait_ready(180)
    try:
        assert httpx.get(f"http://127.0.0.1:{old}/api/status").status_code == 200
        write_config(tmp_path, models, merge_sections(QUICK, f'[web]\nenabled = true\nport = {new}\n'
                                                             f'token = "{TOKEN}"\n'))
        s.send(signal.SIGHUP)
        s.wait_log("Reloaded:")
        r = wait_for(lambda: _get(f"http://127.0.0.1:{new}/api/status"), 30, "the new port", log=s.log)
        assert r.status_code == 401   # the new token is in force
        assert httpx.get(f"http://127.0.0.1:{new}/api/status",
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{old}/api/status")
    finally:
        assert s.stop() == 0
    assert "web dashboard and API at http://127.0.0.1:%d/" % new in s.log()


def test_a_login_outlives_a_restart_and_a_new_token_logs_everyone_out(tmp_path, tiny_models):
    port = free_port()
    models = {"colorize": tiny_models["colorize"]}

    def start(log):
        config = write_config(tmp_path, models, merge_sections(QUICK, f'[web]\nenabled = true\nport = {port}\n'
                                                                      f'token = "{TOKEN}"\n'))
        return Service(config, child_env(), tmp_path / log).wait_ready(180)

    url = f"http://127.0.0.1:{port}"
    s = start("first.log")
    try:
        with httpx.Client(base_url=url, follow_redirects=False) as c:
            assert c.post("/login", data={"token": TOKEN}).status_code == 303
            sid = c.cookies["reverser_session"]
            csrf = c.get("/").text.split('name="csrf" content="')[1].split('"')[0]
    finally:
        assert s.stop() == 0
    kept = (tmp_path / "var" / "web" / "sessions.json").read_text()
    assert sid not in kept and csrf in kept     # the cookie's digest is kept, not the cookie
    assert (tmp_path / "var" / "web" / "sessions.json").stat().st_mode & 0o777 == 0o600
    s = start("second.log")
    try:
        with httpx.Client(base_url=url, cookies={"reverser_session": sid}, follow_redirects=False) as c:
            assert c.get("/").status_code == 200                  # still logged in, with the same CSRF token
            assert f'name="csrf" content="{csrf}"' in c.get("/").text
            write_config(tmp_path, models, merge_sections(QUICK, f'[web]\nenabled = true\nport = {port}\n'
                                                                 f'token = "another-{TOKEN}"\n'))
            s.send(signal.SIGHUP)
            s.wait_log("Reloaded:")
            assert c.get("/").status_code == 401                  # a new token: log in again
            assert c.get("/api/status").status_code == 401
            r = c.post("/login", data={"token": f"another-{TOKEN}"}, headers={"Origin": url})
            assert r.status_code == 303
            new_sid = r.cookies["reverser_session"]
            c.cookies = {"reverser_session": new_sid}
            assert c.get("/").status_code == 200
            assert c.post("/logout", headers={"Origin": url}).status_code == 303
            c.cookies = {"reverser_session": new_sid}
            assert c.get("/").status_code == 401                  # logged out: that cookie opens nothing
    finally:
        assert s.stop() == 0
    assert (tmp_path / "var" / "web" / "sessions.json").read_text().strip() == "{}"


def _get(url):
    try:
        return httpx.get(url)
    except httpx.HTTPError:
        return None


def test_check_summarises_web_and_tells_metrics_users_how_to_move(tmp_path, tiny_models):
    config = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                          '[metrics]\nenabled = true\nport = 9464\n[web]\nenabled = true\nport = 8089\n')
    r = check(config)
    assert r.returncode == 0, r.stderr
    assert "web      http://127.0.0.1:8089/ (no token: this machine only)" in r.stdout
    assert "scrape http://127.0.0.1:8089/metrics and remove [metrics]" in r.stderr
    same = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                        '[metrics]\nenabled = true\nport = 8089\n[web]\nenabled = true\nport = 8089\n')
    r = check(same)
    assert r.returncode == 78 and "[metrics] port" in r.stderr and "remove [metrics]" in r.stderr
