"""reverser run: the service's life cycle, start-up, main loop and shutdown, inside one signal-capturing block.

    inbox/<q>/NAME_before.EXT --watcher--> claim into work/ --pipeline--> outbox/<q>/NAME_after.EXT
                                                                      \\-> outbox/<q>/failed/ + reason

Signals, as uvicorn and rq handle them: the first SIGTERM or SIGINT stops
taking files, finishes the batch in flight, writes what is done and exits 0
within runtime.drain_seconds; a second one exits at once (claimed files wait
in work/ and go through first at the next start). SIGHUP reloads the config
and the models; a config or model that does not load is refused with the
reason logged, and the running one is kept.

This module wires the rooms and keeps the life cycle; the work is elsewhere:
file handling in conversion/feed.py, model loading in learning/serving.py,
validation in preflight.py, status.json's lists in statusfile.py. conversion/ and learning/ never import each other;
they meet here. The pairs intake is a second Watcher over
inbox/<q>/train/, built and stopped beside the inbox watcher in _bring_up and
_bring_down; the nightly retraining's scheduler starts in startup(), is
rebuilt in reload() and is shut down first in shutdown(). systemd and metrics
(lines marked "systemd:" and "metrics:"): READY=1 at the end of start-up,
STATUS= with the status file, WATCHDOG=1 from the main loop only while
_stall() finds nothing (notify.Watchdog), RELOADING=1 around SIGHUP and
STOPPING=1 at shutdown; the optional Prometheus endpoint serves self.metrics. What happens (a model set,
a file finished, a batch, a training run's outcome, a queue's depth) is told once, to self.observe
(ops/observer.py), which keeps both the status board and the metrics.
The optional web server (lines marked "web:", daemon/web/, run by webhost.py)
takes its port first in startup(), serves once the service is up, moves in
reload() when [web]'s address changes, and stops in shutdown(); the feed tells
its file index where each input went.
`reverser run` (commands/run.py) builds and runs a Service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from functools import partial

from loguru import logger

from .conversion.claims.owners import Owner
from .conversion.claims.retention import DoneSweeper
from .conversion.claims.spool import Spool
from .conversion.converting import autobatch
from .conversion.converting.pipeline import Pipeline, PipelineSettings
from .conversion.feed import InboxFeed, count_waiting
from .conversion.hotswap import ChampionWatch
from .conversion.watching.watcher import Watcher
from .core import memory
from .core.config import Config, ConfigError, load_config
from .core.fs import sweep_temp
from .core.namebytes import near
from .core.names import input_name, is_inbox_file, is_pair_file
from .errors import EX_OK
from .learning.counts import read_counts
from .learning.intake import PairIntake
from .learning.retrain import Retrainer
from .learning.scheduler import RetrainScheduler
from .learning.serving import load_predictor, load_serving, model_dir
from .ops.health import Health
from .ops.logs import setup_logging
from .ops.notify import Notifier, Watchdog, status_text
from .ops.observer import Observer
from .ops.prometheus import Metrics, MetricsServer
from .ops.status import STATUS_FILE, StatusBoard
from .preflight import require_valid
from .statusfile import StatusFile, add_seen
from .webhost import WebHost


class Service:
    def __init__(self, cfg: Config, log_json: bool = False):
        self.cfg, self.log_json = cfg, log_json
        self.should_exit = False
        self.reload_requested = False
        self.signal_name = ""
        self.wake = threading.Event()
        self.owner: Owner | None = None
        self.board: StatusBoard | None = None
        self.pipeline: Pipeline | None = None
        self.watcher: Watcher | None = None
        self.pairs_watcher: Watcher | None = None     # inbox/<q>/train/ -> the pairs intake
        self.intakes: dict[str, PairIntake] = {}
        self.retrainer: Retrainer | None = None
        self.scheduler: RetrainScheduler | None = None
        self.champions: ChampionWatch | None = None
        self.feed: InboxFeed | None = None
        self.sweeper: DoneSweeper | None = None       # [output] done_keep_days / done_max_mb
        self.spools: dict[str, Spool] = {}
        self.unfinished = False       # worker threads still busy when we return: exit without waiting
        # max_batch = "auto": an earlier start's choice taken at once, measured again once the service is idle.
        self.batch_sizes = autobatch.BatchSizes(cfg.paths.state / autobatch.KEPT_FILE, self._idle, self._measured)
        # systemd: notifications (no-ops outside systemd), and a watchdog fed only while work moves.
        self.notifier = Notifier()
        self.health = Health()        # fed by the pipeline's before_batch/after_batch hooks
        self.watchdog = Watchdog(self.notifier, self._stall)
        self.waiting: dict[str, int] = {}
        self.status_file = StatusFile()   # status.json, a failed write said once
        self.metrics = Metrics(cfg.queues)   # metrics: always counted (cheap), served only when [metrics] enabled
        self.observe = Observer(self.metrics)   # what happens, to the status board and the metrics at once
        self.metrics_server: MetricsServer | None = None
        # web: the dashboard and API ([web]), with /metrics; its context holds the file index the feed tells.
        self.web = WebHost(self.metrics)

    def run(self) -> int:
        with self.capture_signals():
            self.startup()
            self.main_loop()
            self.shutdown()
        return EX_OK

    # -- signals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture_signals(self):
        """Our handlers for SIGINT, SIGTERM and SIGHUP while inside; the previous ones restored after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, self.handle_signal) for s in sigs}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def handle_signal(self, sig: int, frame) -> None:
        # No logging here: the main thread may hold loguru's lock at this instant.
        if sig == signal.SIGHUP:
            self.reload_requested = True
        elif self.should_exit:
            os.write(2, f"{signal.Signals(sig).name} again: exiting now; files in work/ go through first "
                        f"at the next start\n".encode())
            os._exit(128 + sig)
        else:
            self.should_exit, self.signal_name = True, signal.Signals(sig).name
        self.wake.set()

    # -- start-up -----------------------------------------------------------------------------

    def startup(self) -> None:
        cfg = self.cfg
        import torch

        if cfg.runtime.torch_threads:
            torch.set_num_threads(cfg.runtime.torch_threads)
        web = self.web.bind(cfg)   # web: the port is taken before anything starts (in use: exit 78)
        self.owner = Owner(cfg.state_dir("work"))
        self.web.context(cfg)       # web: the file index, before the feed that tells it
        predictors = load_serving(cfg)
        device = str(next(iter(predictors.values())).device)
        self.board = self.observe.board = StatusBoard(list(cfg.queues), device)
        logger.info("reverser starting, pid {}: device {} (torch {}, {} CPU thread(s))",
                    os.getpid(), device, torch.__version__, torch.get_num_threads())
        self._bring_up(cfg, predictors)
        self.retrainer = Retrainer(cfg)
        self.retrainer.on_outcome = self.observe.trained
        self.scheduler = RetrainScheduler(cfg, self.retrainer.run_due)
        self.scheduler.start()      # a night missed while the service was down runs now, once
        if cfg.metrics.enabled:  # metrics:
            self.metrics_server = self._serve_metrics(cfg)
        if web is not None:  # web:
            self.web.serve(web, self.retrainer, self._next_run)
        self.board.state = "running"
        self.write_status()
        logger.info("Ready: drop NAME_before.jpg into {}/<queue>/ ({}); results appear in {}/<queue>/.",
                    near(cfg.paths.inbox, cfg.file), ", ".join(cfg.queues), near(cfg.paths.outbox, cfg.file))
        self.notifier.ready(self.status_line())  # systemd: models loaded, device chosen, watchers running
        self.batch_sizes.start()

    def _measured(self, q: str, predictor, choice) -> None:
        """A kept batch size measured again while idle (autobatch.BatchSizes): used from the next batch on."""
        if self.pipeline.predictor(q) is predictor and choice.size != self.pipeline.max_batch.get(q):
            self.pipeline.max_batch[q] = choice.size   # read at each batch
            self.observe.model(q, predictor.model.path, predictor.version, choice.size, choice.why)

    def _idle(self) -> bool:
        cfg = self.cfg
        return not sum(self.pipeline.inflight.values()) and not any(count_waiting(cfg.inbox(q)) for q in cfg.queues)

    def _bring_up(self, cfg: Config, predictors: dict, recover_own: bool = False) -> None:
        """Spools, pipeline, recovery of work/, the inbox watcher and the champion watch, for cfg."""
        self.spools = {q: Spool(cfg, q, self.owner) for q in cfg.queues}
        for folder in [cfg.paths.state] + [d for q in cfg.queues
                                           for d in (cfg.outbox(q), cfg.failed(q), cfg.state_dir("done", q))]:
            sweep_temp(folder, is_alive=self.owner.is_alive)  # half-written temporary files of a killed process
        batches = {}
        for q, p in predictors.items():
            auto = cfg.runtime.max_batch == "auto"
            choice = self.batch_sizes.choose(q, p) if auto else (cfg.runtime.max_batch, "configured")
            n, why = choice[0], choice[1]
            batches[q] = n
            self.observe.model(q, p.model.path, p.version, n, why)
            # Lines that fit a terminal: paths as the config names them, max_batch auto's figures on their own.
            logger.info("queue {} ({}): model version {} from {}; batch size {} ({})", q, p.task.name, p.version,
                        near(p.model.path, cfg.file), n, "configured" if why == "configured" else
                        "kept" if not getattr(choice, "measured", True) else "measured")
            logger.info("queue {}: {} -> {}", q, near(cfg.inbox(q), cfg.file), near(cfg.outbox(q), cfg.file))
            if why != "configured":
                logger.info("queue {}: {}", q, why)
        budget, why = memory.budget(cfg.runtime.memory_budget_mb)
        logger.info("memory budget for decoded images in flight: {} ({}; [runtime] memory_budget_mb), "
                    "at most {} file(s) in flight", memory.gib(budget), why, cfg.runtime.queue_size)
        self.pipeline = Pipeline(predictors, batches, PipelineSettings.from_config(cfg, writer=self.owner.id),
                                 before_batch=self._batch_started,   # systemd: watchdog health; metrics
                                 after_batch=self.health.batch_finished)
        self.feed = InboxFeed(cfg, self.spools, self.pipeline, self.observe.file)
        self.feed.on_placed = self.web.ctx.index.placed if self.web.ctx else None  # web: where each file went
        self.feed.on_recovered = self.web.ctx.index.settle if self.web.ctx else None  # web: and those a kill hid
        if self.web.ctx:
            self.web.ctx.memory = self.pipeline.memory   # the dashboard's picture decodes take from it too
            self.web.ctx.predictor = self.pipeline.predictor   # the live view of color points runs the same model
        self.feed.recover(recover_own)
        w = cfg.watch
        inboxes = {cfg.inbox(q): partial(self.feed.take, q) for q in cfg.queues}
        self.watcher = Watcher.from_config(cfg, inboxes, is_inbox_file, threads=2, label="inbox", rename=input_name,
                                           expect="NAME_before.<image ext>",
                                           subfolders={cfg.train_inbox(q).name for q in cfg.queues})
        self.feed.on_put_back = self.watcher.hold   # an unfinished file put back waits to be finished
        self.watcher.start()
        old, intakes = self.intakes, {q: PairIntake(cfg, q, writer=self.owner.id) for q in cfg.queues}
        for q in set(old) & set(intakes):   # a reload: the halves waiting keep their clocks
            intakes[q].carry_from(old[q])
        self.intakes = intakes
        self.pairs_watcher = Watcher.from_config(cfg, {cfg.train_inbox(q): intakes[q].handle for q in cfg.queues},
                                                 is_pair_file, threads=1, label="pairs",
                                                 expect="NAME_before/NAME_after.<image ext> or a color photo")
        self.pairs_watcher.start()
        how = ("inotify: files are taken at close-after-write or rename" if self.watcher.close_events
               else f"{w.observer} observer: files are taken once unchanged for {w.settle_seconds:g} s")
        logger.info("watching {} inbox folder(s) with {}; full scan every {:g} s; status in {}",
                    len(cfg.queues), how, w.rescan_seconds, near(cfg.paths.state / STATUS_FILE, cfg.file))
        self.champions = ChampionWatch(self.pipeline, list(cfg.queues), partial(model_dir, cfg),
                                       lambda q, folder: load_predictor(cfg, folder, cfg.queues[q].task),
                                       on_swap=self._swapped)
        self.champions.start()
        o = cfg.output
        self.sweeper = DoneSweeper(cfg.state_dir("done"), o.done_keep_days, o.done_max_mb).start()

    def _swapped(self, q: str, p) -> None:
        self.observe.model(q, p.model.path, p.version)

    # -- main loop ----------------------------------------------------------------------------

    def main_loop(self) -> None:
        interval = self.cfg.status.interval_seconds
        next_status = 0.0
        while not self.should_exit:
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
                interval = self.cfg.status.interval_seconds
            if time.monotonic() >= next_status:
                self.write_status()
                self.notifier.status(self.status_line())  # systemd:
                next_status = time.monotonic() + interval
            self.watchdog.tick()  # systemd: WATCHDOG=1 when due, and only while _stall() finds nothing
            self.wake.wait(max(0.05, min(next_status - time.monotonic(), 1.0)))
            self.wake.clear()

    def _stall(self) -> str | None:
        """systemd: why the service is wedged (the watchdog then stops pinging), or None: the pipeline's
        threads alive, the observer watching, and work moving (ops.health.Health, the one stall check)."""
        dead = self.pipeline.dead_threads()
        if dead:
            return dead
        if not self.watcher.observer_alive:
            return "the file-system observer is not running (the next scan restarts it)"
        # Results held for an outbox that takes none (disk full) are waiting, not wedged.
        queued = sum(self.pipeline.inflight.values()) - self.pipeline.outbox.held
        return self.health.problem(queued)

    def status_line(self) -> str:
        """systemd: the STATUS= line, e.g. 'queued 3 (colorize 3, reverse 0); 12.0 files/min; models ...'."""
        snap = self.board.snapshot(self.waiting, dict(self.pipeline.inflight))["queues"]
        return status_text({q: s["waiting"] + s["working"] for q, s in snap.items()},
                           {q: s["model"].get("version") for q, s in snap.items()},
                           sum(s["per_minute"] for s in snap.values()))

    def _batch_started(self, queue: str | None = None, size: int = 0) -> int:
        """Pipeline hook before each forward pass: a token for the watchdog's health, and the batch size
        for metrics once the pipeline passes (queue, size)."""
        if queue is not None:
            self.observe.batch(queue, size)
        return self.health.batch_started()

    def _serve_metrics(self, cfg: Config) -> MetricsServer:
        """metrics: the endpoint, or a ConfigError (exit 78) when it cannot listen."""
        try:
            return MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port).start()
        except OSError as e:
            raise ConfigError(cfg.file, "[metrics] port", str(e)) from None

    def _next_run(self):
        """web: when the next scheduled training run is due (for Train now), or None."""
        return self.scheduler.next_run() if self.scheduler else None

    def write_status(self) -> None:
        cfg = self.cfg
        waiting = {}
        for q in cfg.queues:
            waiting[q] = count_waiting(cfg.inbox(q))
            self.observe.depth(q, waiting[q] + self.pipeline.inflight.get(q, 0))
        self.waiting = waiting
        extra = {q: {"pairs": read_counts(cfg.state_dir("pairs", q))} for q in cfg.queues}
        add_seen(cfg, (self.watcher, self.pairs_watcher), self.intakes, extra,
                 self.feed.hints_waiting if self.feed else None)
        self.status_file.write(cfg, lambda: self.board.write(cfg.paths.state, waiting, dict(self.pipeline.inflight),
                                                             cfg.status.interval_seconds, extra, writer=self.owner.id))

    # -- reload and shutdown ------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: read the config and models again; keep the running ones if the new ones do not load."""
        self.notifier.reloading()  # systemd: READY=1 again when done, refused or not
        self.watchdog.stretch(self.cfg.runtime.drain_seconds + 120)  # systemd: draining and loading take a while
        logger.info("SIGHUP: reloading {}", self.cfg.file)
        try:
            new = load_config(self.cfg.file)
            require_valid(new, fallback=True)  # the checks of `reverser check`
            predictors = load_serving(new)
            web = self.web.rebind(self.cfg, new)   # web: a new address is taken first, or the reload is refused
        except ConfigError as e:
            logger.error("Reload refused, the running configuration stays in force: {}", e)
            self.notifier.ready(f"reload refused: {e.problem}; running the previous configuration")
            return
        self.board.state = "reloading"
        left = self._bring_down(time.monotonic() + new.runtime.drain_seconds)
        setup_logging(new.logging, self.log_json)
        self.cfg = new
        self.web.context(new)  # web: the new config (and token) in place
        self._bring_up(new, predictors, recover_own=True)
        self.scheduler.shutdown()   # a run in progress goes on; the new schedule's start waits its turn
        self.retrainer.cfg = new
        self.scheduler = RetrainScheduler(new, self.retrainer.run_due)
        self.scheduler.start()
        if web is not None:  # web: on its new address
            self.web.serve(web, self.retrainer, self._next_run)
        self.board.state = "running"
        logger.info("Reloaded: queues {}{}", ", ".join(new.queues),
                    f"; {left} claimed file(s) resumed" if left else "")
        self.notifier.ready(self.status_line())  # systemd:
        self.batch_sizes.start()

    def _bring_down(self, deadline: float) -> int:
        """Stop watching, then finish the batch in flight by deadline; return files left in work/."""
        self.champions.stop()
        self.sweeper.stop()
        self.pipeline.stop_intake()   # frees watcher threads waiting for room
        self.watcher.stop()
        self.pairs_watcher.stop()
        left = self.pipeline.close(deadline)
        self.feed.close()             # inputs waiting for done/ to take them stay in work/, for the next start
        self.unfinished = not self.pipeline.stopped
        return left

    def shutdown(self) -> None:
        self.batch_sizes.stop()
        drain = self.cfg.runtime.drain_seconds
        self.scheduler.shutdown()
        self.retrainer.stop()       # a training child is killed; its run is recorded as failed
        self.notifier.stopping()  # systemd:
        logger.info("{}: stopping. No new files are taken; finishing the batch in flight (at most {:g} s). "
                    "Send it again (Ctrl+C) to stop at once.", self.signal_name or "stop", drain)
        self.board.state = "draining"
        self.write_status()
        deadline = time.monotonic() + drain
        left = self._bring_down(deadline)
        self.board.state = "stopped"
        self.write_status()
        if self.metrics_server is not None:  # metrics:
            self.metrics_server.stop()
        self.web.stop()  # web:
        self.owner.close()
        c = {q: (x.processed, x.failed) for q, x in self.board.queues.items()}
        logger.info("Stopped: {}.{}", ", ".join(f"{q} {p} converted, {f} failed" for q, (p, f) in c.items()),
                    f" {left} claimed file(s) stay in work/ and go through first at the next start." if left else "")
