"""Who may do what on the web server: the token, the pages' session cookie, cross-site refusals, headers.

    a request --> Host: a loopback name when no token is set (a DNS-rebinding page is refused)
              --> who: "Authorization: Bearer <token>", or the session cookie a login set (HttpOnly,
                  SameSite=Strict); with a token set, nobody else gets past /login and /static/ (401)
              --> a wrong token (Bearer or /login) costs its client address: after FREE_MISSES, every
                  token from that address is refused for a while (429, Retry-After), doubling (Misses)
              --> a change (POST ...) not carrying the Bearer token: its Origin (or Referer) must be
                  this server's own, and a cookie's session must show its CSRF token (403)
              --> every answer: nosniff, a Content-Security-Policy of 'self' only (a picture: no scripts,
                  none of anything else, its viewer's own inline style), no framing;
                  Cache-Control: no-store on everything but /static/, whose files the pages name by
                  their content's hash (kept for good) and which are asked again when named without it

The Bearer token is what programs send; a browser cannot be made to send it by
another site, so a request carrying it needs no CSRF check. Without a token
(the loopback default) a program's POST with no Origin and no cookie is let
through, as anything on this machine may write into the inbox anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from loguru import logger
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..core.config import is_loopback
from ..core.fs import write_json

COOKIE = "reverser_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
IMMUTABLE = "public, max-age=31536000, immutable"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PUBLIC = ("/login", "/static/")
FREE_MISSES = 5          # wrong tokens an address may send before it is locked out
FIRST_LOCK_SECONDS = 30  # the first lock-out; each miss after one doubles it, up to MAX_LOCK_SECONDS
MAX_LOCK_SECONDS = 900
MISS_MEMORY_SECONDS = 3600   # an address with no miss for this long starts afresh
MAX_ADDRESSES = 10_000       # addresses remembered at most (the oldest miss goes first)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
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
    key: str = ""        # digest of the token it logged in with ("" without a token); another token: no session
    flash: str = ""      # what the last form's action said, shown once on the next page


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32] if token else ""


class Sessions:
    """The pages' sessions. Those a login made are kept in file (the state folder's web/sessions.json), so a
    restart or a reload keeps people logged in; a new [web] token logs them all out. The file (mode 0600)
    holds each cookie's digest, not the cookie. Without a token, a session (for the CSRF token) is made at once and
    lives in memory only."""

    def __init__(self, file: Path | None = None):
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}    # by the cookie's digest
        self.file = file
        if file is not None:
            self._load()

    def new(self, token: str = "") -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = Session(secrets.token_urlsafe(32), time.time() + SESSION_SECONDS, token_key(token))
        with self._lock:
            now = time.time()
            for old in [k for k, v in self._by_id.items() if v.expires < now or v.key != s.key]:
                del self._by_id[old]     # expired, or made under another token (which opens nothing now)
            while len(self._by_id) >= MAX_SESSIONS:
                del self._by_id[next(iter(self._by_id))]
            self._by_id[_digest(sid)] = s
            if s.key:
                self._save()
        return sid, s

    def get(self, sid: str | None, token: str = "") -> Session | None:
        with self._lock:
            s = self._by_id.get(_digest(sid or ""))
        return s if s is not None and s.expires > time.time() and s.key == token_key(token) else None

    def drop(self, sid: str | None) -> None:
        with self._lock:
            s = self._by_id.pop(_digest(sid or ""), None)
            if s is not None and s.key:
                self._save()

    def _load(self) -> None:
        try:
            doc = json.loads(self.file.read_bytes())
            now = time.time()
            self._by_id = {k: Session(str(v["csrf"]), float(v["expires"]), str(v["key"]))
                           for k, v in doc.items() if float(v["expires"]) > now}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            logger.warning("web sessions: {} unreadable ({}); everyone logs in again", self.file, e)

    def _save(self) -> None:
        if self.file is None:
            return
        kept = {k: {"csrf": s.csrf, "expires": s.expires, "key": s.key} for k, s in self._by_id.items() if s.key}
        try:
            write_json(self.file, kept, mode=0o600)   # the token's digest: for the service's user alone
        except OSError as e:     # a full or read-only disk: the session still holds until the next restart
            logger.warning("web sessions: cannot write {} ({}); logins last until the service restarts",
                           self.file, e.strerror or e)


@dataclass
class _Misses:
    count: int = 0
    last: float = 0.0        # monotonic time of the last miss
    until: float = 0.0       # locked out until then (monotonic)


class Misses:
    """Wrong tokens per client address, for the Bearer header and /login alike: the first FREE_MISSES cost
    a short wait each; then the address is locked out (every token refused, right or wrong, so guessing
    during a lock-out learns nothing) for FIRST_LOCK_SECONDS, doubling with each miss after it. A right
    token outside a lock-out forgets the address. Each lock-out is logged once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_addr: dict[str, _Misses] = {}

    def locked(self, addr: str) -> int:
        """Seconds addr is still locked out for (0: it may try a token)."""
        with self._lock:
            m = self._by_addr.get(addr)
            left = m.until - time.monotonic() if m is not None else 0
        return max(1, int(left + 0.999)) if left > 0 else 0

    def miss(self, addr: str) -> int:
        """A wrong token from addr; the seconds it is now locked out for (0: not yet)."""
        now = time.monotonic()
        with self._lock:
            m = self._by_addr.pop(addr, None)
            if m is None or now - m.last > MISS_MEMORY_SECONDS:
                m = _Misses()
            self._by_addr[addr] = m     # last in the dict: the most recent
            while len(self._by_addr) > MAX_ADDRESSES:
                del self._by_addr[next(iter(self._by_addr))]
            m.count, m.last = m.count + 1, now
            if m.count <= FREE_MISSES:
                return 0
            seconds = min(MAX_LOCK_SECONDS, FIRST_LOCK_SECONDS * 2 ** (m.count - FREE_MISSES - 1))
            m.until = now + seconds
        logger.warning("web: {} wrong tokens from {}; every token from there is refused for {} s (429)",
                       m.count, addr, seconds)
        return seconds

    def hit(self, addr: str) -> None:
        """A right token from addr (not locked out): its misses are forgotten."""
        with self._lock:
            self._by_addr.pop(addr, None)


def client_address(request: Request) -> str:
    """Who is asking: the peer's address (a trusted local proxy's X-Forwarded-For, through uvicorn)."""
    return request.client.host if request.client else "?"


def too_many(api: bool, seconds: int) -> Response:
    """The answer to a locked-out address: 429 with Retry-After."""
    message = f"too many wrong tokens from this address: try again in {seconds} s"
    headers = {"Retry-After": str(seconds)}
    if api:
        return JSONResponse({"error": message}, 429, headers=headers)
    return PlainTextResponse(message + "\n", 429, headers=headers)


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


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

    def __init__(self, app, token, sessions: Sessions, login_page, misses: Misses):
        super().__init__(app)
        self.token, self.sessions, self.login_page = token, sessions, login_page   # token(): the one in force
        self.misses = misses

    async def dispatch(self, request: Request, call_next) -> Response:
        response = await self._check(request, call_next)
        response.headers.update(HEADERS)
        kind = response.headers.get("content-type", "")
        if kind.startswith("image/") and not kind.startswith("image/svg"):
            response.headers["Content-Security-Policy"] = PICTURE_CSP
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        elif response.status_code == 200:
            # The pages name each file with its content's hash (pages.static_urls): that URL never changes
            # meaning. Without the hash, the browser asks again each time (a 304 when unchanged).
            response.headers["Cache-Control"] = (IMMUTABLE if request.query_params.get("v") else "no-cache")
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
            addr = client_address(request)
            locked = self.misses.locked(addr)
            if locked:
                return too_many(api, locked)
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not same_token(given.strip(), token):
                locked = self.misses.miss(addr)
                if locked:
                    return too_many(api, locked)
                await asyncio.sleep(0.2)   # a guesser waits
                return _refuse(api, 401, "wrong token in the Authorization header", bearer=True)
            self.misses.hit(addr)
            via = "bearer"
        sid = request.cookies.get(COOKIE)
        request.state.session = self.sessions.get(sid, token)
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
