"""What the service says about itself, told once and kept twice: the status board (status.json,
`reverser status`, systemd's STATUS=) and the Prometheus metrics.

The service calls one method per event (a model set, a file finished, a batch started, a training run's
outcome, a queue's depth) instead of updating each of them at every place where it happens.
"""

from __future__ import annotations

from .prometheus import Metrics
from .status import StatusBoard


class Observer:
    """The service's events, to the board (set once the device is known: board) and the metrics."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.board: StatusBoard | None = None

    def model(self, queue: str, path, version, max_batch: int | None = None, why: str | None = None) -> None:
        """queue serves version from path (loaded, swapped in, or its batch size chosen again)."""
        self.board.set_model(queue, path, version, max_batch, why)
        self.metrics.model_version(queue, version)

    def file(self, queue: str, ok: bool, seconds: float | None) -> None:
        """One input finished: converted (ok, in seconds where known) or quarantined."""
        self.board.record(queue, ok)
        if ok:
            self.metrics.file_processed(queue, seconds)
        else:
            self.metrics.file_failed(queue)

    def batch(self, queue: str, size: int) -> None:
        self.metrics.batch(queue, size)

    def trained(self, outcome) -> None:
        """A training run's outcome (learning.promotion.TrainingOutcome)."""
        self.metrics.training(outcome.queue, outcome.decision, outcome.psnr_gain_db)

    def depth(self, queue: str, files: int) -> None:
        """Files waiting in queue's inbox and in flight."""
        self.metrics.queue_depth(queue, files)
