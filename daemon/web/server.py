"""The web server of the service: the Starlette app ([web]: pages, API, /metrics) and its life in a thread.

Why Starlette served by uvicorn: both are well kept (encode), ASGI, small, and
what FastAPI stands on; Jinja2 renders the pages; prometheus_client ships an
ASGI app, so /metrics is the library's own exposition on the same port. The
server runs on a daemon thread of the service with its own event loop, so
conversion never waits for a page, and an idle server costs a timer tick.

    Service.startup:  WebServer(...).bind()    the port taken at once, or ConfigError: exit 78, "[web] port"
                      ... models, watchers ...
                      .start(app)              uvicorn serves the bound socket from the "web" thread
    Service.reload:   a changed host or port binds the new address first (refused: the old one stays),
                      then the old server stops and the new one starts; a changed token only is swapped in
    Service.shutdown: .stop()                  uvicorn closes the socket and its connections
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from loguru import logger
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..core.config import Config, ConfigError
from . import api, limits, pages
from .actions import TrainNow
from .files import FileIndex
from .limits import route_uvicorn_logs
from .recolor import Previews
from .security import Guard, Misses, Sessions

HERE = Path(__file__).parent


class _ASGI:
    """An ASGI app as a Route's endpoint (Starlette treats a bare function as a request handler)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


@dataclass
class WebContext:
    """What the routes read at each request; a reload that keeps the address swaps cfg and index here."""

    cfg: Config
    index: FileIndex
    metrics_app: object | None = None    # prometheus_client's ASGI app over the service's registry
    train: TrainNow | None = None
    memory: object | None = None         # the pipeline's conversion.converting.budget.MemoryBudget: pictures' decodes take from it
    predictor: object | None = None      # queue -> its serving unet Predictor (the pipeline's): the live view's model
    previews: Previews = field(default_factory=Previews)   # the live views' propagations (recolor.py)


def create_app(ctx: WebContext) -> Starlette:
    sessions, misses = Sessions(ctx.index.path.parent / "sessions.json"), Misses()
    page_routes, login_page = pages.routes(ctx, sessions, misses)
    routes = api.routes(ctx) + page_routes + [Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    if ctx.metrics_app is not None:
        routes.append(Route("/metrics", _ASGI(ctx.metrics_app)))
    guard = Middleware(Guard, token=lambda: ctx.cfg.web.token, sessions=sessions, login_page=login_page,
                       misses=misses)
    return Starlette(routes=routes, middleware=[guard])


class WebServer:
    """uvicorn on a socket bound before it starts (so a port in use is a configuration error at once)."""

    def __init__(self, cfg: Config, key: str = "[web]"):
        self.host, self.port, self.key, self.file = cfg.web.host, cfg.web.port, key, cfg.file
        self.web = cfg.web   # the connection cap and request deadlines (limits.py)
        self.sock: socket.socket | None = None
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def bind(self) -> "WebServer":
        """Take the address now; ConfigError naming the key when it cannot be had."""
        host = self.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a restart need not wait for TIME_WAIT
        try:
            sock.bind((host, self.port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            hint = (f"another process holds the port: set {self.key} port to a free one, or stop that process"
                    if e.errno == 98 else
                    f"{self.key} host must be an address of this machine" if e.errno == 99 else
                    "under systemd, the unit's RestrictAddressFamilies= must allow AF_INET (and AF_INET6); "
                    "see deploy/web.conf" if e.errno == 97 else f"check {self.key} host and port")
            raise ConfigError(self.file, f"{self.key} port", f"cannot listen on {self.host}:{self.port}: "
                                                              f"{e.strerror}", hint) from None
        self.sock = sock
        self.port = sock.getsockname()[1]    # the real one when port 0 asked for any free port
        return self

    def start(self, app) -> "WebServer":
        web = self.web
        route_uvicorn_logs()
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop="asyncio",
                                http=limits.protocol(web), ws="none", server_header=False,
                                timeout_graceful_shutdown=2, proxy_headers=True, forwarded_allow_ips="127.0.0.1,::1",
                                limit_concurrency=web.max_connections, timeout_keep_alive=5,
                                h11_max_incomplete_event_size=64 * 1024, backlog=64)
        # backlog: asyncio accepts up to this many connections at each wake-up before any is served or
        # refused; uvicorn's 2048 would take 2048 file handles at once.
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        logger.info("web dashboard and API at {}", self.url)
        return self

    def _serve(self) -> None:
        """The web thread: uvicorn on its own event loop, whose complaints are one log line each."""
        async def main():
            asyncio.get_running_loop().set_exception_handler(limits.loop_trouble)
            await self.server.serve(sockets=[self.sock])

        asyncio.run(main())

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self) -> None:
        """Stop serving and close the socket; connections get two seconds to finish."""
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(10)
            self.server = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
