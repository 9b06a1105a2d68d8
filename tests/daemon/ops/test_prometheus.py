"""The Prometheus endpoint: answers on localhost in the text format, and its numbers move with the work."""

from __future__ import annotations

import re
import socket
import threading
import urllib.error
import urllib.request

import pytest

from daemon.ops.prometheus import Metrics, MetricsServer
from tests.support.net import free_port


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample, matched by name and exactly these labels (in any order); None if absent."""
    for m in re.finditer(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(2))
    return None


@pytest.fixture
def server():
    s = MetricsServer(Metrics(), "127.0.0.1", 0).start()
    yield s
    s.stop()


def test_endpoint_answers_on_localhost_in_prometheus_text_format(server):
    ctype, text = scrape(server.port)
    assert ctype.startswith("text/plain; version=0.0.4")
    assert "# TYPE reverser_files_processed_total counter" in text
    assert "# TYPE reverser_file_latency_seconds histogram" in text
    assert sample(text, "reverser_start_time_seconds") > 0


def test_counts_move_with_the_work(server):
    m = server.metrics
    m.file_processed("colorize", 0.3)
    m.file_processed("colorize", 7.0)
    m.file_failed("reverse")
    m.queue_depth("colorize", 12)
    for size in (1, 3, 8):
        m.batch("colorize", size)
    m.model_version("colorize", 3)
    m.training("colorize", "promoted", psnr_gain_db=0.42, when=1700000000)
    _, text = scrape(server.port)
    assert sample(text, "reverser_files_processed_total", queue="colorize") == 2
    assert sample(text, "reverser_files_failed_total", queue="reverse") == 1
    assert sample(text, "reverser_queue_depth", queue="colorize") == 12
    assert sample(text, "reverser_model_version", queue="colorize") == 3
    assert sample(text, "reverser_last_training_timestamp_seconds", queue="colorize", result="promoted") == 1.7e9
    assert sample(text, "reverser_last_training_psnr_gain_db", queue="colorize") == 0.42
    # Histograms: cumulative buckets, +Inf equals the count, and the sum.
    assert sample(text, "reverser_file_latency_seconds_bucket", queue="colorize", le="0.5") == 1
    assert sample(text, "reverser_file_latency_seconds_bucket", queue="colorize", le="10") == 2
    assert sample(text, "reverser_file_latency_seconds_bucket", queue="colorize", le="+Inf") == 2
    assert sample(text, "reverser_file_latency_seconds_sum", queue="colorize") == 7.3
    assert sample(text, "reverser_batch_size_bucket", queue="colorize", le="2") == 1
    assert sample(text, "reverser_batch_size_bucket", queue="colorize", le="4") == 2
    assert sample(text, "reverser_batch_size_count", queue="colorize") == 3


def test_counters_are_exact_under_concurrent_updates():
    m = Metrics()

    def work():
        for _ in range(2000):
            m.file_processed("q", 0.1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = m.render()
    assert sample(text, "reverser_files_processed_total", queue="q") == 8000
    assert sample(text, "reverser_file_latency_seconds_count", queue="q") == 8000


def test_label_values_are_escaped():
    m = Metrics()
    m.file_processed('we"ird\\name', 1)
    assert 'reverser_files_processed_total{queue="we\\"ird\\\\name"} 1' in m.render()


def test_other_paths_are_404(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(server.port, "/")
    assert info.value.code == 404


def test_a_taken_port_is_an_error_that_names_it(server):
    with pytest.raises(OSError, match=rf"cannot serve metrics on 127.0.0.1:{server.port}: .*\[metrics\] port"):
        MetricsServer(Metrics(), "127.0.0.1", server.port).start()


def test_bound_to_localhost_only(server):
    # Reachable on 127.0.0.1 (above), and the listening socket's address is the loopback one.
    assert server._server.server_address[0] == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_known_queues_start_at_zero():
    text = Metrics(["colorize", "reverse"]).render()
    assert sample(text, "reverser_files_failed_total", queue="reverse") == 0
    assert sample(text, "reverser_files_processed_total", queue="colorize") == 0


def test_the_service_sets_the_last_runs_psnr_gain(tmp_path, tiny_models):
    from daemon.core.config import load_config
    from daemon.learning.promotion import TrainingOutcome
    from daemon.service import Service
    from tests.support.config import write_config

    service = Service(load_config(write_config(tmp_path, {"colorize": tiny_models["colorize"]})))
    service.observe.trained(TrainingOutcome("colorize", "promoted", "better", psnr_gain_db=0.25))   # on_outcome
    text = service.metrics.render()
    assert sample(text, "reverser_last_training_psnr_gain_db", queue="colorize") == 0.25
    assert sample(text, "reverser_last_training_timestamp_seconds", queue="colorize", result="promoted") > 0


def test_the_running_service_counts_a_processed_file(tmp_path, tiny_models, service_env):
    from tests.support.config import write_config
    from tests.support.images import make_image
    from tests.support.service import Service, wait_for

    port = free_port()
    config = write_config(tmp_path, {"colorize": tiny_models["colorize"]},
                          f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n')
    service = Service(config, service_env, tmp_path / "service.log")
    try:
        service.wait_ready()
        _, text = scrape(port)
        assert sample(text, "reverser_files_processed_total", queue="colorize") == 0
        assert sample(text, "reverser_model_version", queue="colorize") == 1

        make_image(tmp_path / "inbox" / "colorize" / "a_before.png", mode="L")
        def counted():
            text = scrape(port)[1]
            return text if sample(text, "reverser_files_processed_total", queue="colorize") == 1 else None

        text = wait_for(counted, 60, "the processed file to be counted", log=service.log)
        assert (tmp_path / "outbox" / "colorize" / "a_after.png").exists()
        assert sample(text, "reverser_file_latency_seconds_count", queue="colorize") == 1
        assert sample(text, "reverser_batch_size_count", queue="colorize") >= 1, "batches are counted"
        assert sample(text, "reverser_files_failed_total", queue="colorize") == 0

        (tmp_path / "inbox" / "colorize" / "b_before.png").write_bytes(b"not an image")
        wait_for(lambda: sample(scrape(port)[1], "reverser_files_failed_total", queue="colorize") == 1,
                 60, "the failed file to be counted", log=service.log)
    finally:
        assert service.stop() == 0
    with pytest.raises(OSError):
        scrape(port)  # the endpoint goes away with the service
