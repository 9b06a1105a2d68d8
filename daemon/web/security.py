"""Who may do what on the web server: the token, the pages' session cookie, cross-site refusals, headers.

    a request --> Host: a loopback name when no token is set (a DNS-rebinding page is refused)
              --> who: "Authorization: Bearer <token>", or the session cookie a login set (HttpOnly,
                  SameSite=Strict); with a token set, nobody else gets past /login and /static/ (401)
              --> a change (POST ...) not carrying the Bearer token: its Origin (or Referer) must be
                  this server's own, and a cookie's session must show its CSRF token (403)
              --> every answer: nosniff, a Content-Security-Policy of 'self' only (a picture: no scripts,
                  none of anything else, its viewer's own inline style), no framing;
                  Cache-Control: no-store on everything but /static/

The Bearer token is what programs send; a browser cannot be made to send it by
another site, so a request carrying it needs no CSRF check. Without a token
(the loopback default) a program's POST with no Origin and no cookie is let
through, as anything on this machine may write into the inbox anyway.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..core.config import is_loopback

COOKIE = "reverser_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PUBLIC = ("/login", "/static/")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# A picture opened by itself (the comparison's "at 100%" links) is shown by the browser in a page of its own
# whose inline style the pages' policy refuses; a picture cannot run script, and nosniff keeps it a picture.
PICTURE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


@dataclass
class Session:
    csrf: str
    expires: float
    flash: str = ""      # what the last form's action said, shown once on the next page


class Sessions:
    """The pages' sessions, in memory: a restart or a reload that rebinds logs everyone out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def new(self) -> tuple[str, Session]:
        sid, s = secrets.token_urlsafe(32), Session(secrets.token_urlsafe(32), time.time() + SESSION_SECONDS)
        with self._lock:
            now = time.time()
            for old in [k for k, v in self._by_id.items() if v.expires < now]:
                del self._by_id[old]
            while len(self._by_id) >= MAX_SESSIONS:
                del self._by_id[next(iter(self._by_id))]
            self._by_id[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        with self._lock:
            s = self._by_id.get(sid or "")
        return s if s is not None and s.expires > time.time() else None

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def set_cookie(response: Response, request: Request, sid: str) -> None:
    """The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it), Secure
    behind a TLS proxy."""
    response.set_cookie(COOKIE, sid, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def same_token(given: str, token: str) -> bool:
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def csrf_ok(request: Request, given: str | None) -> bool:
    """Whether given (a form's csrf field or the X-CSRF-Token header) is this session's CSRF token."""
    s = getattr(request.state, "session", None)
    return s is not None and given is not None and hmac.compare_digest(given.encode(), s.csrf.encode())


class Guard(BaseHTTPMiddleware):
    """The checks of the module docstring, in front of every route; the refusal pages come from login_page."""

    def __init__(self, app, token, sessions: Sessions, login_page):
        super().__init__(app)
        self.token, self.sessions, self.login_page = token, sessions, login_page   # token(): the one in force

    async def dispatch(self, request: Request, call_next) -> Response:
        response = await self._check(request, call_next)
        response.headers.update(HEADERS)
        kind = response.headers.get("content-type", "")
        if kind.startswith("image/") and not kind.startswith("image/svg"):
            response.headers["Content-Security-Policy"] = PICTURE_CSP
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    async def _check(self, request: Request, call_next) -> Response:
        path, host, token = request.url.path, request.headers.get("host", ""), self.token()
        api = path.startswith("/api/") or path == "/metrics"
        if not token and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return _refuse(api, 403, f"Host {host!r} is not this machine: without a [web] token only loopback "
                                     "names are answered (set a token to serve other names through a proxy)")
        via = None
        auth = request.headers.get("authorization")
        if auth and token:
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not same_token(given.strip(), token):
                await asyncio.sleep(0.2)   # a guesser waits
                return _refuse(api, 401, "wrong token in the Authorization header", bearer=True)
            via = "bearer"
        sid = request.cookies.get(COOKIE)
        request.state.session = self.sessions.get(sid)
        if via is None and request.state.session is not None:
            via = "cookie"
        public = path == "/login" or path.startswith("/static/")
        if token and via is None and not public:
            if api:
                return _refuse(True, 401, "this server needs a token: send Authorization: Bearer <token>",
                               bearer=True)
            return self.login_page(request, 401)
        if request.method not in SAFE_METHODS and via != "bearer":
            why = _cross_site(request, host)
            if why:
                return _refuse(api, 403, why)
            if via == "cookie" and api and not csrf_ok(request, request.headers.get(CSRF_HEADER)):
                return _refuse(True, 403, "missing or wrong X-CSRF-Token for this session: reload the page")
        new_sid = None
        if not token and request.state.session is None and not api and request.method in SAFE_METHODS:
            new_sid, request.state.session = self.sessions.new()   # no login without a token: a session at once
        response = await call_next(request)
        if new_sid:
            set_cookie(response, request, new_sid)
        return response


def _cross_site(request: Request, host: str) -> str | None:
    """Why a changing request looks cross-site (its Origin or Referer names another site), or None."""
    site = request.headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return f"cross-site request refused: Origin {origin!r} is not this server ({host})"
    elif request.cookies.get(COOKIE):
        return "a request with the session cookie must say where it comes from (Origin or Referer)"
    return None


def _refuse(api: bool, status: int, message: str, bearer: bool = False) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="reverser"'} if bearer else {}
    if api:
        return JSONResponse({"error": message}, status, headers=headers)
    return PlainTextResponse(message + "\n", status, headers=headers)
