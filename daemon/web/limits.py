"""What the web server lets a client hold: connections, and the time a request may take to arrive.

A client that opens connections and never finishes its request (slowloris)
holds a file handle each; enough of them and the service cannot open the
images it converts. uvicorn's own limit_concurrency answers 503 only once a
request's headers are in, and it has no deadline for the headers or the
body, so uvicorn's h11 protocol is extended here ([web]):

    a connection past max_connections     503 and closed at once: its handle is given back
    headers not whole in header_seconds   closed
    a body not whole in body_seconds      closed (the upload is cut; nothing of it is kept)

The event loop's own complaints (accept() failing for want of file handles)
and uvicorn's log lines go to the service's log as one line each, which
ops/logs.py folds when they repeat, never as a traceback per try.
"""

from __future__ import annotations

import asyncio
import errno
import logging

import h11
from loguru import logger
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..core.config import WebConfig

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
        b"retry-after: 5\r\ncontent-length: 45\r\n\r\ntoo many open connections: try again shortly\n")


def protocol(web: WebConfig) -> type[H11Protocol]:
    """uvicorn's h11 protocol with web's connection cap and request deadlines (see the module docstring)."""

    class Limited(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _stage: str | None = None    # "headers" or "body": what the timer waits for
        _refused = False

        def connection_made(self, transport) -> None:
            if len(self.server_state.connections) >= web.max_connections:
                self._refused = True
                transport.write(BUSY)
                transport.close()    # written out, then the handle is given back
                logger.warning("web: {} connections open, [web] max_connections; a new one was refused (503)",
                               web.max_connections)
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            self._arm()

        def pause_writing(self) -> None:
            if not self._refused:
                super().pause_writing()

        def resume_writing(self) -> None:
            if not self._refused:
                super().resume_writing()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def _arm(self) -> None:
            """A deadline for what the client sends next: its headers, or its body."""
            state = self.conn.their_state
            stage = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
            if stage == self._stage:
                return
            self._disarm()
            self._stage = stage
            if stage is not None and not self.transport.is_closing():
                seconds = web.header_seconds if stage == "headers" else web.body_seconds
                self._timer = self.loop.call_later(seconds, self._too_slow, stage, seconds)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._stage = None, None

        def _too_slow(self, stage: str, seconds: float) -> None:
            self._timer = None
            if self._stage != stage or self.transport.is_closing():
                return
            key = "header_seconds" if stage == "headers" else "body_seconds"
            logger.warning("web: a request's {} did not arrive within {:g} s ([web] {}); its connection was "
                           "closed", stage, seconds, key)
            self.transport.abort()

    return Limited


def loop_trouble(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The web loop's exception handler: one log line, no traceback, for want of file handles."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
        logger.warning("web: {} ({}); new connections wait a moment", context.get("message", "out of resources"),
                       exc.strerror)
    elif exc is not None:
        logger.error("web: {}: {}: {}", context.get("message", "event loop error"), type(exc).__name__, exc)
    else:
        logger.error("web: {}", context.get("message", "event loop error"))


class ToLoguru(logging.Handler):
    """uvicorn's standard-library log lines into the service's log, one line each (never a traceback)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "WARNING" if record.levelno < logging.ERROR else "ERROR"
        if record.levelno < logging.WARNING:
            return
        what = f": {record.exc_info[1]}" if record.exc_info and record.exc_info[1] is not None else ""
        logger.log(level, "web: {}{}", record.getMessage(), what)


def route_uvicorn_logs() -> None:
    """Send uvicorn's loggers through ToLoguru (once)."""
    for name in ("uvicorn.error", "uvicorn"):
        log = logging.getLogger(name)
        if not any(isinstance(h, ToLoguru) for h in log.handlers):
            log.addHandler(ToLoguru())
        log.propagate = False
