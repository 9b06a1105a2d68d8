"""The service's side of the optional web server ([web]): its port taken first, kept across reloads, stopped last.

The dashboard and API themselves are daemon/web/; this runs them for the
Service. The port is bound before anything else starts (in use: exit 78);
the context the routes read (the config, the file index the feed tells) is
kept across reloads, with the new config swapped in; a reload to a new
address takes the new port first, or is refused with the old server kept.
"""

from __future__ import annotations

from typing import Callable

from .core.config import Config, ConfigError


class WebHost:
    """The web server of one Service, and what its routes read."""

    def __init__(self, metrics):
        self.metrics = metrics   # ops.prometheus.Metrics: the web serves its /metrics too
        self.server = None       # web.server.WebServer while serving
        self.ctx = None          # web.server.WebContext while [web] enabled
        self._train: tuple = ()  # (the retrainer, when the next run is due): for Train now

    @staticmethod
    def bind(cfg: Config):
        """A WebServer holding [web] host:port, or None when [web] is off; ConfigError (exit 78) when the
        address cannot be had."""
        if not cfg.web.enabled:
            return None
        from .web.server import WebServer

        return WebServer(cfg).bind()

    def context(self, cfg: Config) -> None:
        """What the web's routes read (the config, the file index), kept across reloads; None when off."""
        if not cfg.web.enabled:
            self.ctx = None
            return
        from .web.files import FileIndex
        from .web.server import WebContext

        if self.ctx is None or self.ctx.index.path.parent.parent != cfg.paths.state:
            self.ctx = WebContext(cfg, FileIndex(cfg), self.metrics.asgi_app())
        self.ctx.cfg = self.ctx.index.cfg = cfg

    def serve(self, server, retrainer, next_run: Callable) -> None:
        """Start serving on server (bound already); retrainer and next_run(): for the Train now action."""
        from .web.actions import TrainNow
        from .web.server import create_app

        self._train = (retrainer, next_run)
        self.ctx.train = TrainNow(retrainer, next_run)
        self.server = server.start(create_app(self.ctx))

    def rebind(self, old: Config, new: Config):
        """Reload: a WebServer bound to the new [web] address, to start once the reload is done; None when the
        running server (or none) stays. The old server stops here when the new address needs its port."""
        if not new.web.enabled:
            self.stop()
            return None
        if self.server is not None and (new.web.host, new.web.port) == (old.web.host, old.web.port):
            return None   # the same address: the token and folders are swapped in place (context())
        if self.server is not None and new.web.port == self.server.port:
            self.stop()   # another host on the same port: let it go first
            try:
                return self.bind(new)
            except ConfigError:
                self.serve(self.bind(old), *self._train)   # back on the old address
                raise
        server = self.bind(new)
        self.stop()
        return server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
