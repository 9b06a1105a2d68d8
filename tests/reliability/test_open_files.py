"""Open files: slow web clients by the thousand against a real service whose open-file limit is low.

The service is a real `reverser run` child whose RLIMIT_NOFILE is lowered before it starts (as
systemd's default soft limit of 1024 would have it); the clients are real sockets that connect and
send half a request, and open a new connection whenever the server closes one (slowloris). Good
inputs dropped meanwhile must end as results, never in failed/, and the log stays short.
"""

from __future__ import annotations

import resource
import selectors
import socket
import subprocess
import threading

import pytest

from tests.support.net import free_port
from tests.support.images import make_image
from tests.support.processes import PYTHON
from tests.support.rig import QUICK
from tests.support.config import merge_sections, write_config
from tests.support.service import Service, wait_for


class LimitedService(Service):
    """A service child started with at most nofile open files (its soft RLIMIT_NOFILE)."""

    def __init__(self, config, env, log, nofile: int):
        self.config, self.logfile = config, log
        self._out = open(log, "ab")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "daemon", "run", "--config", str(config)], env=env, stdout=self._out,
            stderr=subprocess.STDOUT, cwd=config.parent,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard)))


class SlowClients:
    """n connections kept open to port, each with half a request sent; one the server closes is opened again."""

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.refused = 0     # connections answered 503
        self.cut = 0         # connections the server closed without an answer (a deadline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SlowClients":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                while len(sel.get_map()) < self.n and not self._stop.is_set():
                    s = socket.socket()
                    s.settimeout(0.5)
                    try:
                        s.connect(("127.0.0.1", self.port))
                        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    except OSError:
                        s.close()
                        break     # the server's backlog is full: try again in a moment
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ)
                for key, _ in sel.select(0.2):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if data.startswith(b"HTTP/1.1 503"):
                        self.refused += 1
                    elif not data:
                        self.cut += 1
                    sel.unregister(s)
                    s.close()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


@pytest.fixture
def nofile_room():
    """The test process needs room for its own 1,100 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}; these tests open 1,100 sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _start(root, models, env, nofile: int, web: str) -> tuple[LimitedService, int]:
    port = free_port()
    text = merge_sections(QUICK, f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n{web}')
    config = write_config(root, {"colorize": models["colorize"]}, text)
    service = LimitedService(config, env, root / "service.log", nofile).wait_ready(180)
    return service, port


def _drop(inbox, n: int) -> list[str]:
    names = [f"p{i:02d}_before.png" for i in range(n)]
    for name in names:
        make_image(inbox / name, (64, 48), "L")
    return names


def _results(outbox) -> list[str]:
    return sorted(p.name for p in outbox.glob("*_after.*"))


def test_1100_slow_clients_under_a_1024_file_limit_do_not_stop_conversion(tmp_path, tiny_models, service_env,
                                                                           nofile_room):
    service, port = _start(tmp_path, tiny_models, service_env, 1024, "header_seconds = 2\n")
    inbox, outbox = tmp_path / "inbox" / "colorize", tmp_path / "outbox" / "colorize"
    try:
        with SlowClients(port, 1100) as clients:
            wait_for(lambda: clients.refused > 100, 120, "the server to refuse connections past its cap",
                     log=service.log)
            _drop(inbox, 24)
            wait_for(lambda: len(_results(outbox)) == 24, 180, "24 results", log=service.log)
            wait_for(lambda: clients.cut > 0, 60, "a slow request to be cut at its deadline", log=service.log)
        assert service.proc.poll() is None
    finally:
        service.stop()
    assert not list((outbox / "failed").glob("*")), "good inputs never go to failed/"
    log = service.log()
    assert "Too many open files" not in log
    lines = log.splitlines()
    assert len(lines) < 400, f"{len(lines)} log lines"
    refusals = [line for line in lines if "a new one was refused" in line]
    assert 1 <= len(refusals) <= 10, refusals


def test_out_of_file_handles_a_good_input_waits_and_is_converted_later_never_failed(tmp_path, tiny_models,
                                                                                   service_env, nofile_room):
    # No effective connection cap here: the clients take every handle the service has, as they
    # did before the cap, and conversion runs out of file handles. They hold them until the test lets go
    # (no header deadline cuts them), so a busy machine's slow reconnects leave no gaps to convert in.
    service, port = _start(tmp_path, tiny_models, service_env, 300,
                           "max_connections = 5000\nheader_seconds = 3600\n")
    inbox, outbox = tmp_path / "inbox" / "colorize", tmp_path / "outbox" / "colorize"
    try:
        with SlowClients(port, 600):
            wait_for(lambda: "Too many open files" in service.log(), 120, "the service to run out of file handles",
                     log=service.log)
            _drop(inbox, 12)
            wait_for(lambda: "was not converted now" in service.log() or len(_results(outbox)) == 12, 120,
                     "a file put back to wait", log=service.log)
            assert not list((outbox / "failed").glob("*")), "good inputs never go to failed/"
        wait_for(lambda: len(_results(outbox)) == 12, 180, "12 results once the clients are gone", log=service.log)
        assert service.proc.poll() is None
    finally:
        service.stop()
    assert not list((outbox / "failed").glob("*")), "good inputs never go to failed/"
    assert "was not converted now" in service.log()
    lines = service.log().splitlines()
    assert len(lines) < 1000, f"{len(lines)} log lines"
