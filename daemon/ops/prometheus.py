"""Optional Prometheus endpoint: counters, gauges and histograms the service updates, served on localhost.

The exposition format is written by hand: prometheus_client is not a
dependency, and what this service exports (a few counters, gauges and two
histograms with fixed labels) is forty lines of the stable text format 0.0.4.
The server is http.server on a daemon thread, off by default and bound to
127.0.0.1 unless the config says otherwise.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loguru import logger

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)                         # images per forward pass
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)       # seconds, claim to result written
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects them."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            out.append(f"{name}_bucket{_labels({**labels, 'le': _number(bound)})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {running}")
        return out


class Metrics:
    """The service's numbers. Every method is thread-safe and cheap: call it from any worker."""

    def __init__(self, queues: Iterable[str] = ()):
        self._lock = threading.Lock()
        self.started = time.time()
        # Known queues start at zero, so a rate() over the first failure sees it rise from 0.
        self._processed: dict[str, int] = dict.fromkeys(queues, 0)
        self._failed: dict[str, int] = dict.fromkeys(queues, 0)
        self._depth: dict[str, int] = dict.fromkeys(queues, 0)
        self._batches: dict[str, Histogram] = {}
        self._latency: dict[str, Histogram] = {}
        self._version: dict[str, float] = {}
        self._training: dict[str, tuple[str, float, float | None]] = {}  # queue -> (result, time, PSNR gain)

    def file_processed(self, queue: str, seconds: float) -> None:
        """One result written, seconds after its input was claimed."""
        with self._lock:
            self._processed[queue] = self._processed.get(queue, 0) + 1
            self._latency.setdefault(queue, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def file_failed(self, queue: str) -> None:
        """One input moved to the failed folder (its reason is in the reason file beside it)."""
        with self._lock:
            self._failed[queue] = self._failed.get(queue, 0) + 1

    def queue_depth(self, queue: str, files: int) -> None:
        """Files waiting in the queue now (claimed or not yet converted)."""
        with self._lock:
            self._depth[queue] = files

    def batch(self, queue: str, size: int) -> None:
        """One forward pass over size images."""
        with self._lock:
            self._batches.setdefault(queue, Histogram(BATCH_BUCKETS)).observe(size)

    def model_version(self, queue: str, version) -> None:
        """The champion version now serving the queue."""
        with self._lock:
            try:
                self._version[queue] = float(version)
            except (TypeError, ValueError):
                self._version[queue] = math.nan

    def training(self, queue: str, result: str, psnr_gain_db: float | None = None, when: float | None = None):
        """The last retraining run: result is 'promoted', 'rejected', 'skipped' or 'failed'."""
        with self._lock:
            self._training[queue] = (result, time.time() if when is None else when, psnr_gain_db)

    def render(self) -> str:
        """The whole registry in Prometheus text format."""
        with self._lock:
            out: list[str] = []

            def family(name, kind, help, samples):
                out.extend((f"# HELP {name} {help}", f"# TYPE {name} {kind}"))
                out.extend(samples)

            family("reverser_start_time_seconds", "gauge", "When the service started, in Unix time.",
                   [f"reverser_start_time_seconds {_number(self.started)}"])
            family("reverser_files_processed_total", "counter", "Images converted and written to the outbox.",
                   [f"reverser_files_processed_total{_labels({'queue': q})} {n}"
                    for q, n in sorted(self._processed.items())])
            family("reverser_files_failed_total", "counter", "Inputs moved to the failed folder.",
                   [f"reverser_files_failed_total{_labels({'queue': q})} {n}"
                    for q, n in sorted(self._failed.items())])
            family("reverser_queue_depth", "gauge", "Files waiting to be converted.",
                   [f"reverser_queue_depth{_labels({'queue': q})} {n}" for q, n in sorted(self._depth.items())])
            family("reverser_batch_size", "histogram", "Images per forward pass.",
                   [line for q, h in sorted(self._batches.items())
                    for line in h.lines("reverser_batch_size", {"queue": q})])
            family("reverser_file_latency_seconds", "histogram", "Seconds from claiming an input to its result.",
                   [line for q, h in sorted(self._latency.items())
                    for line in h.lines("reverser_file_latency_seconds", {"queue": q})])
            family("reverser_model_version", "gauge", "The model version serving each queue.",
                   [f"reverser_model_version{_labels({'queue': q})} {_number(v)}"
                    for q, v in sorted(self._version.items())])
            family("reverser_last_training_timestamp_seconds", "gauge",
                   "When the last retraining run ended, in Unix time; result says how it ended.",
                   [f"reverser_last_training_timestamp_seconds{_labels({'queue': q, 'result': r})} {_number(t)}"
                    for q, (r, t, _) in sorted(self._training.items())])
            family("reverser_last_training_psnr_gain_db", "gauge",
                   "The last challenger's PSNR minus the champion's on held-out pairs.",
                   [f"reverser_last_training_psnr_gain_db{_labels({'queue': q})} {_number(g)}"
                    for q, (_, _, g) in sorted(self._training.items()) if g is not None])
        return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    # The format escapes exactly these three in label values.
    esc = {k: str(v).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


class MetricsServer:
    """GET /metrics on host:port from a daemon thread; start() raises OSError naming the address and the fix."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9464):
        self.metrics, self.host, self.port = metrics, host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "MetricsServer":
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?", 1)[0] != "/metrics":
                    self._reply(404, "text/plain; charset=utf-8", "not found: the metrics are at /metrics\n")
                    return
                self._reply(200, CONTENT_TYPE, metrics.render())

            def _reply(self, code: int, ctype: str, text: str):
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # http.server writes every request to stderr otherwise
                logger.debug("metrics: {} {}", self.address_string(), format % args)

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET  # "::1" for IPv6 loopback
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        try:
            self._server = server_class((self.host, self.port), Handler)
        except OSError as e:
            hint = ("another process holds the port: set [metrics] port" if e.errno == 98 else
                    "under systemd, the unit's RestrictAddressFamilies= must allow AF_INET (and AF_INET6); "
                    "see the metrics drop-in in the README" if e.errno == 97 else
                    "check [metrics] host and port")
            raise OSError(e.errno, f"cannot serve metrics on {self.host}:{self.port}: {e.strerror}; {hint}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]  # the real one when port 0 asked for any free port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        logger.info("metrics at http://{}:{}/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
