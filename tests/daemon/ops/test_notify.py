"""sd_notify on a real unix datagram socket, and a watchdog that goes quiet when the pipeline wedges."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from daemon.ops.health import Health
from daemon.ops.notify import Notifier, Watchdog, status_text, watchdog_interval
from tests.support.processes import PYTHON


class Systemd:
    """The manager's end: a bound AF_UNIX datagram socket that collects notifications."""

    def __init__(self, address: str):
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def messages(self, timeout: float = 0.0) -> list[dict[str, str]]:
        """Every datagram waiting (waiting up to timeout for the first), each parsed into KEY: value."""
        out = []
        self.sock.settimeout(timeout or None) if timeout else self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
                self.sock.setblocking(False)
        except (BlockingIOError, socket.timeout):
            return out

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = Systemd(str(tmp_path / "notify.sock"))
    yield s
    s.close()


@pytest.fixture
def abstract_systemd():
    s = Systemd(f"@reverser-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    yield s
    s.close()


def test_lifecycle_messages_arrive_in_order(systemd):
    n = Notifier(env={"NOTIFY_SOCKET": systemd.address})
    assert n.enabled
    assert n.ready("queued 0; models colorize v1")
    assert n.status("queued 3")
    assert n.watchdog()
    assert n.stopping()
    got = systemd.messages(timeout=5)
    assert [next(iter(m)) for m in got] == ["READY", "STATUS", "WATCHDOG", "STOPPING"]
    assert got[0] == {"READY": "1", "STATUS": "queued 0; models colorize v1"}
    assert got[1] == {"STATUS": "queued 3"}
    assert got[3]["STOPPING"] == "1" and "STATUS" in got[3]


def test_abstract_namespace_socket(abstract_systemd):
    n = Notifier(env={"NOTIFY_SOCKET": abstract_systemd.address})
    assert n.ready()
    assert abstract_systemd.messages(timeout=5) == [{"READY": "1"}]


def test_reloading_carries_monotonic_time(systemd):
    n = Notifier(env={"NOTIFY_SOCKET": systemd.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.ready()
    reload, ready = systemd.messages(timeout=5)
    assert reload["RELOADING"] == "1"
    assert before <= int(reload["MONOTONIC_USEC"]) <= after
    assert ready["READY"] == "1"


def test_unchanged_status_is_not_resent_and_stays_one_line(systemd):
    n = Notifier(env={"NOTIFY_SOCKET": systemd.address})
    n.status("queued 1")
    n.status("queued 1")
    n.status("queued 2\nREADY=1")  # a newline must not smuggle in a second key
    assert systemd.messages(timeout=5) == [{"STATUS": "queued 1"}, {"STATUS": "queued 2 READY=1"}]


def test_outside_systemd_nothing_is_sent_and_nothing_fails():
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.stopping() and not n.reloading()
    assert n.watchdog_interval is None


def test_vanished_socket_does_not_take_the_service_down(tmp_path):
    s = Systemd(str(tmp_path / "gone.sock"))
    n = Notifier(env={"NOTIFY_SOCKET": s.address})
    s.close()
    os.unlink(s.address)
    assert n.ready() is False
    assert n.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_sec_and_only_for_us():
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


def test_status_text_reads_like_a_sentence():
    text = status_text({"colorize": 2, "reverse": 1}, {"colorize": 2, "reverse": 1}, 12.5)
    assert text == "queued 3 (colorize 2, reverse 1); 12.5 files/min; models colorize v2, reverse v1"


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_health_names_what_is_wrong():
    clock = FakeClock()
    h = Health(stall_seconds=60, clock=clock)
    alive = {"watcher": True}
    h.watch("watcher", lambda: alive["watcher"])
    assert h.problem(queued=0) is None

    # Queued work with batches finishing is healthy however long it lasts.
    for _ in range(10):
        clock.t += 30
        h.batch_finished(h.batch_started())
        assert h.problem(queued=5) is None

    # Queued work and nothing finishing: a stall, counted from when the work appeared.
    clock.t += 30
    assert h.problem(queued=5) is None
    clock.t += 61
    assert "5 file(s) waiting" in h.problem(queued=5)
    assert h.problem(queued=0) is None  # an empty queue is idle, not stalled

    token = h.batch_started()
    clock.t += 61
    assert "batch has been running for 61 s" in h.problem(queued=0)
    h.batch_finished(token)
    assert h.problem(queued=0) is None

    alive["watcher"] = False
    assert h.problem() == "watcher stopped running"


def test_slow_hardware_raises_the_stall_limit():
    clock = FakeClock()
    h = Health(stall_seconds=60, clock=clock)
    token = h.batch_started()
    clock.t += 20  # a slow but healthy batch
    h.batch_finished(token)
    assert h.limit() == 200
    token = h.batch_started()
    clock.t += 150
    assert h.problem() is None
    clock.t += 60
    assert "running for 210 s" in h.problem()


class Pipeline:
    """A one-thread stand-in for the batcher: each 'forward pass' waits for the test to release it."""

    def __init__(self, health: Health):
        self.health = health
        self.queued = 0
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            with self.lock:
                take = self.queued > 0
            if not take:
                time.sleep(0.005)
                continue
            token = self.health.batch_started()
            self.release.wait()  # the forward pass: blocks while the test holds it (a wedged GPU, a deadlock)
            self.health.batch_finished(token)
            with self.lock:
                self.queued -= 1


def test_no_watchdog_pings_while_a_batch_is_stuck(systemd):
    health = Health(stall_seconds=0.3)
    pipe = Pipeline(health)
    health.watch("batcher", pipe.thread.is_alive)
    notifier = Notifier(env={"NOTIFY_SOCKET": systemd.address})
    dog = Watchdog(notifier, lambda: health.problem(pipe.queued), interval=0.05)

    def main_loop(seconds: float) -> list[dict]:
        """Tick like the service's main loop does; return what systemd received meanwhile."""
        got, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            dog.tick()
            time.sleep(0.01)
            got += systemd.messages()
        return got

    def pings(messages):
        return [m for m in messages if "WATCHDOG" in m]

    # Healthy: work flows, pings flow.
    pipe.queued = 50
    assert pings(main_loop(0.3))

    # Wedge the next forward pass and let the main loop notice.
    pipe.release.clear()
    pipe.queued += 5
    got, deadline = [], time.monotonic() + 30
    while dog.unhealthy is None and time.monotonic() < deadline:
        got += main_loop(0.05)
    assert dog.unhealthy and "batch has been running" in dog.unhealthy
    assert any(m.get("STATUS", "").startswith("STALLED: a batch has been running") for m in got)
    assert not pings(main_loop(0.5)), "a wedged pipeline must not ping"

    # Unstick it: pings resume.
    pipe.release.set()
    assert pings(main_loop(0.3))
    assert dog.unhealthy is None
    pipe.stop = True


def test_no_watchdog_pings_once_a_worker_thread_died(systemd):
    health = Health()
    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()
    health.watch("watcher", worker.is_alive)
    dog = Watchdog(Notifier(env={"NOTIFY_SOCKET": systemd.address}), health.problem, interval=0)
    assert dog.tick() is False
    assert dog.unhealthy == "watcher stopped running"
    assert systemd.messages(timeout=5) == [{"STATUS": "STALLED: watcher stopped running"}]


def test_watchdog_refuses_to_run_from_a_timer_thread(systemd):
    dog = Watchdog(Notifier(env={"NOTIFY_SOCKET": systemd.address}), lambda: None, interval=0)
    errors = []

    def timer():
        try:
            dog.tick()
        except AssertionError as e:
            errors.append(e)

    t = threading.Thread(target=timer)
    t.start()
    t.join()
    assert errors and systemd.messages() == []


def test_a_full_systemd_queue_does_not_hang_the_main_loop(systemd, monkeypatch):
    monkeypatch.setattr("daemon.ops.notify.SEND_TIMEOUT", 0.2)
    n = Notifier(env={"NOTIFY_SOCKET": systemd.address})
    sent = []
    while len(sent) < 5000 and (not sent or sent[-1]):
        sent.append(n.watchdog())  # nobody reads: the receive queue fills up, then sends time out
    assert sent[0] and not sent[-1]
    assert systemd.messages()[0] == {"WATCHDOG": "1"}
    assert n.watchdog(), "sends work again once systemd catches up"


def test_a_reload_stretches_the_watchdog_and_the_next_tick_restores_it(systemd):
    dog = Watchdog(Notifier(env={"NOTIFY_SOCKET": systemd.address}), lambda: None, interval=30)
    dog.stretch(150)
    assert systemd.messages(timeout=5) == [{"WATCHDOG": "1", "WATCHDOG_USEC": str(210 * 10**6)}]
    dog.tick()
    assert systemd.messages(timeout=5) == [{"WATCHDOG_USEC": str(60 * 10**6)}]
    dog.tick()
    assert systemd.messages() == [], "the usual timeout is restored once"


# -- the real service: `python -m daemon run` in a child process, NOTIFY_SOCKET pointing at us ---------------

def start_service(tmp_path, tiny_models, env, systemd, code: str = ""):
    """A service child that notifies our socket and expects a ping every 0.5 s (WatchdogSec=1s).

    code runs in the child before the service starts: a test uses it to wedge the model's forward pass.
    """
    from tests.support.config import write_config
    from tests.support.service import Service

    config = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                          "[status]\ninterval_seconds = 0.2\n[runtime]\ndrain_seconds = 5\n")
    env = {**env, "NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"}
    if not code:
        return Service(config, env, tmp_path / "service.log")

    class Patched(Service):
        def __init__(self):  # as Service, but `python script.py run ...` with code run first
            script = tmp_path / "patched_service.py"
            script.write_text(f"import sys\n{code}\nfrom daemon.commands.cli import main\nsys.exit(main(sys.argv[1:]))\n")
            self.config, self.logfile = config, tmp_path / "service.log"
            self._out = open(self.logfile, "ab")
            self.proc = subprocess.Popen([PYTHON, str(script), "run", "--config", str(config)], env=env,
                                         stdout=self._out, stderr=subprocess.STDOUT, cwd=config.parent)

    return Patched()


def collect(systemd, got: list, until, timeout: float = 90.0, what: str = ""):
    """Gather notifications into got until until(got) holds."""
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; got {got}"
        got += systemd.messages(timeout=0.2)
    return got


def kinds(messages) -> list[str]:
    """The first key of each datagram (READY, STATUS, WATCHDOG, RELOADING, STOPPING), in order."""
    return [next(iter(m)) for m in messages]


def test_service_notifies_ready_status_watchdog_reloading_stopping_in_order(
        tmp_path, tiny_models, service_env, systemd):
    from tests.support.images import make_image

    service = start_service(tmp_path, tiny_models, service_env, systemd)
    try:
        got = collect(systemd, [], lambda g: "READY" in kinds(g), what="READY=1")
        ready = next(m for m in got if "READY" in m)
        assert ready["STATUS"].startswith("queued 0 (colorize 0)") and "models colorize v1" in ready["STATUS"]
        assert "Ready:" in service.log(), "READY=1 only once the service is up"

        make_image(tmp_path / "inbox" / "colorize" / "a_before.png", mode="L")
        collect(systemd, got, lambda g: kinds(g).count("WATCHDOG") >= 2
                and (tmp_path / "outbox" / "colorize" / "a_after.png").exists(), what="pings and a result")

        service.send(signal.SIGHUP)
        collect(systemd, got, lambda g: "RELOADING" in kinds(g) and "READY" in kinds(g)[kinds(g).index("RELOADING"):],
                what="RELOADING=1 then READY=1")
        reload = next(m for m in got if "RELOADING" in m)
        assert int(reload["MONOTONIC_USEC"]) > 0

        service.send(signal.SIGTERM)
        assert service.wait_exit() == 0
        got += systemd.messages(timeout=1)
    finally:
        service.stop()
    order = kinds(got)
    assert order[0] == "READY", order
    assert order.index("READY") < order.index("WATCHDOG") < order.index("RELOADING") < order.index("STOPPING")
    assert "STOPPING" in order and "WATCHDOG" not in order[order.index("STOPPING"):], order
    assert any(m.get("STATUS", "").startswith("queued") and "files/min" in m["STATUS"] for m in got)


WEDGE = """
import threading, time
import daemon.ops.health, unet.predictor
daemon.ops.health.STALL_SECONDS = 1.0          # a stuck batch counts as wedged after 1 s, not 2 minutes
release = threading.Event()
def stuck_forward(self, items):
    release.wait()                         # a GPU that never answers
unet.predictor.Predictor.run = stuck_forward
"""


def test_a_wedged_service_stops_pinging_and_says_why(tmp_path, tiny_models, service_env, systemd):
    from tests.support.images import make_image

    service = start_service(tmp_path, tiny_models, service_env, systemd, code=WEDGE)
    try:
        got = collect(systemd, [], lambda g: kinds(g).count("WATCHDOG") >= 2, what="pings while idle")
        make_image(tmp_path / "inbox" / "colorize" / "a_before.png", mode="L")
        collect(systemd, got, lambda g: any(m.get("STATUS", "").startswith("STALLED") for m in g),
                what="STATUS=STALLED")
        at = next(i for i, m in enumerate(got) if m.get("STATUS", "").startswith("STALLED"))
        assert "a batch has been running" in got[at]["STATUS"]
        after = kinds(got[at + 1:])
        end = time.monotonic() + 2.5  # five ping intervals
        while time.monotonic() < end:
            after += kinds(systemd.messages(timeout=0.2))
        assert "WATCHDOG" not in after, "systemd must see the pings stop (and restart the service)"
        assert "pipeline stalled: a batch has been running" in service.log()
        assert service.log().count("pipeline stalled") == 1, "said once, not every loop"
    finally:
        service.proc.kill()  # what systemd's watchdog would do (SIGABRT); a drain would wait for the stuck batch
        service.stop()
