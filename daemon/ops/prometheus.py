"""Optional Prometheus endpoint: the counters, gauges and histograms the service updates, served on localhost.

The numbers live in a prometheus_client registry of the service's own (not the
library's global one) and are written in the text format 0.0.4 by the
library's exposition. With [web] enabled, the web server serves them at
/metrics through the library's ASGI app (asgi_app()), on the web's port. The
older [metrics] endpoint stays for scrapers that know its port: http.server
on a daemon thread, off by default and bound to 127.0.0.1 unless the config
says otherwise; it serves /metrics only, and says why it cannot listen.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)                         # images per forward pass
# Seconds from a file found complete in the inbox (the watcher's Arrival) to its result written.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

prometheus_client.disable_created_metrics()  # no *_created series: this endpoint never had them


class _Bounds(Collector):
    """Histograms with their bucket bounds written as they always were here (le="10", not the client's "10.0"),
    so queries and dashboards that name a bucket keep matching."""

    def __init__(self, *histograms: Histogram):
        self.histograms = histograms

    def collect(self):
        for h in self.histograms:
            for family in h.collect():
                family.samples = [s._replace(labels={**s.labels, "le": _bound(s.labels["le"])})
                                  if "le" in s.labels else s for s in family.samples]
                yield family


def _bound(le: str) -> str:
    v = float(le)
    return le if math.isinf(v) else (str(int(v)) if v.is_integer() else repr(v))


class Metrics:
    """The service's numbers. Every method is thread-safe and cheap: call it from any worker."""

    def __init__(self, queues: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        self._lock = threading.Lock()
        self._training: dict[str, str] = {}   # queue -> the result label of its last run
        self._gained: set[str] = set()        # queues whose last run has a PSNR gain

        def metric(kind, name, help, labels=("queue",), **kw):
            return kind(name, help, list(labels), registry=self.registry, **kw)

        start = Gauge("reverser_start_time_seconds", "When the service started, in Unix time.",
                      registry=self.registry)
        start.set(self.started)
        self._processed = metric(Counter, "reverser_files_processed", "Images converted and written to the outbox.")
        self._failed = metric(Counter, "reverser_files_failed", "Inputs moved to the failed folder.")
        self._depth = metric(Gauge, "reverser_queue_depth", "Files waiting to be converted.")
        hists = CollectorRegistry()   # observed here, exposed through _Bounds
        self._batches = Histogram("reverser_batch_size", "Images per forward pass.", ["queue"],
                                  buckets=BATCH_BUCKETS, registry=hists)
        self._latency = Histogram("reverser_file_latency_seconds",
                                  "Seconds from an input found complete to its result written.", ["queue"],
                                  buckets=LATENCY_BUCKETS, registry=hists)
        self.registry.register(_Bounds(self._batches, self._latency))
        self._version = metric(Gauge, "reverser_model_version", "The model version serving each queue.")
        self._trained_at = metric(Gauge, "reverser_last_training_timestamp_seconds",
                                  "When the last retraining run ended, in Unix time; result says how it ended.",
                                  ("queue", "result"))
        self._gain = metric(Gauge, "reverser_last_training_psnr_gain_db",
                            "The last challenger's PSNR minus the champion's on held-out pairs.")
        for q in queues:  # known queues start at zero, so a rate() over the first failure sees it rise from 0
            self._processed.labels(q)
            self._failed.labels(q)
            self._depth.labels(q)

    def file_processed(self, queue: str, seconds: float | None) -> None:
        """One result written, seconds after its input was found complete (None: not known, as for a result
        the run before a crash wrote, which start-up recovery counts)."""
        self._processed.labels(queue).inc()
        if seconds is not None:
            self._latency.labels(queue).observe(seconds)

    def file_failed(self, queue: str) -> None:
        """One input moved to the failed folder (its reason is in the reason file beside it)."""
        self._failed.labels(queue).inc()

    def queue_depth(self, queue: str, files: int) -> None:
        """Files waiting in the queue now (claimed or not yet converted)."""
        self._depth.labels(queue).set(files)

    def batch(self, queue: str, size: int) -> None:
        """One forward pass over size images."""
        self._batches.labels(queue).observe(size)

    def model_version(self, queue: str, version) -> None:
        """The champion version now serving the queue."""
        try:
            value = float(version)
        except (TypeError, ValueError):
            value = math.nan
        self._version.labels(queue).set(value)

    def training(self, queue: str, result: str, psnr_gain_db: float | None = None, when: float | None = None):
        """The last retraining run: result is 'promoted', 'rejected', 'skipped' or 'failed'; psnr_gain_db
        the challenger's PSNR minus the champion's, when both were scored."""
        with self._lock:  # one series per queue: the last run's
            before = self._training.get(queue)
            if before is not None and before != result:
                self._trained_at.remove(queue, before)
            self._training[queue] = result
            self._trained_at.labels(queue, result).set(time.time() if when is None else when)
            if psnr_gain_db is not None:
                self._gain.labels(queue).set(psnr_gain_db)
                self._gained.add(queue)
            elif queue in self._gained:  # a run that scored no champion: no gain to show
                self._gain.remove(queue)
                self._gained.discard(queue)

    def render(self) -> str:
        """The whole registry in Prometheus text format."""
        return generate_latest(self.registry).decode()

    def asgi_app(self):
        """prometheus_client's own ASGI app over this registry: /metrics on the web server ([web])."""
        return prometheus_client.make_asgi_app(registry=self.registry)


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
