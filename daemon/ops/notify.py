"""systemd notification (sd_notify) and a watchdog that only pings while the pipeline makes progress.

The protocol is one datagram of "KEY=value" lines sent to the AF_UNIX socket
named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). It is
written by hand because it is twenty lines of socket code: the python-systemd
bindings need libsystemd headers to build, and the small sd_notify packages on
PyPI add a dependency for no more than this. Outside systemd (no NOTIFY_SOCKET)
every call is a no-op.

The watchdog contract: systemd kills and restarts a service that stops sending
WATCHDOG=1 for WatchdogSec. Pinging from a timer thread would keep a wedged
service alive forever, so Watchdog.tick() is called from the service's main loop
and pings only while the health check (ops/health.py) finds nothing wrong.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping

from loguru import logger

SEND_TIMEOUT = 2.0  # seconds a notification may wait for room in systemd's socket queue


class Notifier:
    """Sends sd_notify messages to systemd; does nothing when not started by systemd with Type=notify."""

    def __init__(self, address: str | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "") if address is None else address
        self.address = _socket_address(address)
        self.watchdog_interval = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._warned = False
        if address and self.address is None:
            logger.warning("NOTIFY_SOCKET={!r} is not a unix socket path or @name; systemd will not hear "
                           "from this service (Type=notify start-up will time out)", address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of KEY=value lines; True when systemd got it, False outside systemd or on error."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        for _ in range(2):
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Connected, so that a full queue at systemd's end is waited for (poll sees the peer)
                    # rather than spun on; and bounded, so a stuck manager cannot hang the main loop.
                    sock.settimeout(SEND_TIMEOUT)
                    sock.connect(self.address)
                    self._sock = sock
                self._sock.send(data)
                self._warned = False
                return True
            except TimeoutError as e:
                error = e  # systemd is not reading: retrying now would only wait again
                break
            except OSError as e:
                self.close()  # systemd re-executed (a new socket at the same name): reconnect once
                error = e
        # Never let a notification take the service down; say so once.
        if not self._warned:
            logger.warning("cannot notify systemd at {}: {}; readiness and watchdog pings are lost",
                           _printable(self.address), error)
            self._warned = True
        return False

    def ready(self, status: str | None = None) -> bool:
        """READY=1: models loaded, device chosen, watchers running. Also ends a reload."""
        return self.send("READY=1", *self._status_lines(status))

    def status(self, text: str) -> bool:
        """STATUS=text for `systemctl status`; unchanged text is not re-sent."""
        if text == self._last_status:
            return False
        return self.send(*self._status_lines(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1; call it through Watchdog.tick(), which checks health first."""
        return self.send("WATCHDOG=1")

    def reloading(self, status: str | None = "reloading configuration") -> bool:
        """RELOADING=1 on SIGHUP; send ready() when the reload is done (or failed and the old config stays)."""
        # systemd 253+ (Type=notify-reload) requires MONOTONIC_USEC, the CLOCK_MONOTONIC time of the
        # reload, to match it with the reload request; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status_lines(status))

    def stopping(self, status: str | None = "stopping: finishing the work in flight") -> bool:
        """STOPPING=1 at the start of shutdown."""
        return self.send("STOPPING=1", *self._status_lines(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time, e.g. while measuring the best batch size."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _status_lines(self, status: str | None) -> tuple[str, ...]:
        if status is None:
            return ()
        status = " ".join(status.split())  # one line: a newline would start a new KEY=
        self._last_status = status
        return (f"STATUS={status}",)


def _socket_address(address: str) -> str | None:
    if address.startswith("/"):
        return address
    if address.startswith("@") and len(address) > 1:
        return "\0" + address[1:]  # Linux abstract namespace
    return None  # unset, or a kind we do not speak (vsock: is for VMs)


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec, as sd_watchdog_enabled(3) advises), or None."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None  # no watchdog, or it is meant for another process (we are a child)
    return usec / 2e6


class Watchdog:
    """Sends WATCHDOG=1 from the main loop at half of WatchdogSec, but only while the pipeline is healthy.

    Call tick() on every pass of the main loop (at least every few seconds).
    When the pipeline wedges it stops pinging, says why in the log and in
    `systemctl status`, and systemd restarts the service after WatchdogSec.
    """

    def __init__(self, notifier: Notifier, problem: Callable[[], str | None],
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.problem = problem
        self.interval = notifier.watchdog_interval if interval is None else interval
        self.clock = clock
        self._last_ping: float | None = None
        self._stretched = False
        self.unhealthy: str | None = None

    def tick(self) -> bool:
        """Check health; ping if due and healthy. Returns True when a ping was sent."""
        # A timer thread could ping while the main loop is stuck: that is the one thing this must not do.
        assert self.interval is None or threading.current_thread() is threading.main_thread(), \
            "Watchdog.tick() belongs in the main loop"
        problem = self.problem()
        if _kind(problem) != _kind(self.unhealthy):  # "running for 4 s" and "for 5 s" are one stall
            if problem:
                logger.error("pipeline stalled: {}; withholding watchdog pings so systemd restarts the service",
                             problem)
            else:
                logger.info("pipeline moving again")
        if problem:
            self.notifier.status(f"STALLED: {problem}")
        self.unhealthy = problem
        if self.interval is None:
            return False
        if self._stretched:  # back from a long step: systemd's usual timeout again
            self._stretched = not self.notifier.send(f"WATCHDOG_USEC={int(self.interval * 2e6)}")
        if problem:
            return False
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        self._last_ping = now
        return self.notifier.watchdog()


    def stretch(self, seconds: float) -> None:
        """Before a long step in the main loop's own thread (a reload drains and loads models): ping now
        and let the next ping come seconds later than usual; the next tick() restores the usual timeout."""
        if self.interval is None:
            return
        usec = int((2 * self.interval + seconds) * 1e6)
        self._stretched = self.notifier.send("WATCHDOG=1", f"WATCHDOG_USEC={usec}")
        self._last_ping = self.clock()


def _kind(problem: str | None) -> str | None:
    return re.sub(r"\d+", "#", problem) if problem else None


def status_text(queued: Mapping[str, int], versions: Mapping[str, object], files_per_minute: float) -> str:
    """The STATUS= line: 'queued 3 (colorize 2, reverse 1); 12.5 files/min; models colorize v2, reverse v1'."""
    total = sum(queued.values())
    per_queue = ", ".join(f"{q} {n}" for q, n in queued.items())
    models = ", ".join(f"{q} v{v}" for q, v in versions.items())
    return f"queued {total} ({per_queue}); {files_per_minute:.1f} files/min; models {models}"
