"""Training: set-up, epochs, evaluation on the working-size objective and model selection; the full-size
scores a model is judged by are scores.py's."""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace

from typing import Callable

import torch

from .calibration import DETAIL_GAINS, GAINS, TINT_GAINS, calibrate, working_scores  # noqa: F401 (re-exported)
from .checkpoint import Model
from .data import PairRef, PairSet
from .metrics import mean
from .objective import Objective, error_floor
from .predictor import pick_device
from .scores import Scores, evaluate, mean_chroma
from .tasks import make_task


class TrainingError(RuntimeError):
    """Training cannot go on: no data, or the loss stopped being a number."""


@dataclass(frozen=True)
class TrainConfig:
    minutes: float | None = None   # wall-clock budget; training stops at whichever of minutes/epochs comes first
    epochs: int | None = None      # epoch budget
    batch_size: int = 8            # small: a few hundred pairs give few steps per epoch, and more steps of
                                   # fewer pairs learned more per epoch (12 epochs: 16 -> 8 gained 0.3 dB)
    lr: float = 2e-3               # AdamW peak learning rate for a new network
    fine_tune_lr: float = 1e-4     # ... and for fine-tuning a trained one: a converged model is knocked off
                                   # its minimum by much more (a fifth of lr made the nightly job worse)
    weight_decay: float = 1e-4
    warmup: float = 0.03           # share of the budget spent warming the learning rate up
    seed: int = 0
    rebalance: float = 0.5         # colorize bins: class weights 1/((1-r)p + r/Q), r=1 is no rebalancing
    mean_loss: float = 1.0         # colorize bins: weight of the L1 loss on the decoded mean chroma
    ce_weight: float = 0.5         # colorize bins: weight of the rebalanced cross-entropy
    blend_ce_weight: float = 2.0   # colorize blend: the same beside the psnr loss; with the classes on the
                                   # decoder (no side head) 2.0 against 0.5 gave +2 AuC on held-out pairs
                                   # at the same PSNR (docs/models.md)
    regression_loss: str = "psnr"  # colorize regression/blend: psnr (per-image log of the RGB error, see
                                   # objective.py) | smooth_l1 (near the median) | mse (the mean over pixels)
                                   # | ab (the distance in Lab ab, where the hue metric measures)
    vividness: float = 0.8         # colorize: calibrate the decoding to reach this share of the truth's
                                   # colorfulness (0.65 leaves results visibly pale; 0.9 costs 0.4 dB)
    ema: float = 0.99              # evaluate and keep an exponential moving average of the weights, with this
                                   # decay per step (0: the raw weights); smooths the step-to-step noise
    eval_every_s: float = 60.0     # evaluate on validation pairs at most this often (and at the end)
    freeze_encoder: float = 0.5    # a pretrained encoder is held still for this share of the budget while the
                                   # new decoder learns to read it (a random decoder's gradients would
                                   # scramble what the encoder knows), then trained ...
    encoder_lr: float = 0.1        # ... at this share of the decoder's learning rate
    threads: int | None = None     # torch CPU threads; None leaves torch's default
    device: str = "cpu"            # cpu | cuda | cuda:N | auto (CUDA when present)

    def __post_init__(self):
        if self.minutes is None and self.epochs is None:
            raise ValueError("give a budget: minutes, epochs or both")


@dataclass
class Loaded:
    """A run's pairs as loaded and its loss: a second run on the same pairs and architecture reuses them."""

    key: tuple                  # what they depend on: the task's settings, the output stride, the rebalancing
    train_set: PairSet
    val_set: PairSet
    objective: Objective


@dataclass
class TrainResult:
    model: Model
    history: list[dict] = field(default_factory=list)   # one entry per evaluation
    metrics: Scores = field(default_factory=Scores)      # final scores on the validation pairs
    stopped: str = ""                                    # why training ended
    seconds: dict = field(default_factory=dict)          # each phase's wall time: set_up, training,
                                                         # calibration, scoring (what a deadline must leave)
    loaded: Loaded | None = field(default=None, repr=False)  # for train(..., loaded=) on the same pairs


class _Budget:
    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, ends_by: float | None = None):
        self.cfg, self.spe = cfg, max(1, steps_per_epoch)
        self.start = time.monotonic()
        self.ends_by = ends_by   # a time.monotonic() the loop stops by, whatever the minutes say

    @property
    def seconds(self) -> float | None:
        """How long the loop may run: the minutes, or less where ends_by comes first; None: epochs only."""
        limits = [60 * self.cfg.minutes] if self.cfg.minutes is not None else []
        if self.ends_by is not None:
            limits.append(max(0.0, self.ends_by - self.start))
        return min(limits) if limits else None

    def fraction(self, step: int) -> float:
        parts = []
        seconds = self.seconds
        if seconds is not None:
            parts.append((time.monotonic() - self.start) / seconds if seconds else 1.0)
        if self.cfg.epochs is not None:
            parts.append(step / (self.cfg.epochs * self.spe) if self.cfg.epochs else 1.0)
        return min(1.0, max(parts))


def _lr_factor(frac: float, warmup: float) -> float:
    if frac < warmup:
        return (frac + 1e-3) / warmup
    return 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))


@dataclass
class _Run:
    """One training run's state, carried from its set-up through its epochs and evaluations."""

    model: Model
    cfg: TrainConfig
    objective: Objective
    train_set: PairSet
    val_set: PairSet
    opt: torch.optim.Optimizer
    lrs: list[float]                 # each parameter group's peak learning rate
    budget: _Budget
    bar: "_progress_bar"
    ema: "_Average | None"
    log: Callable
    plain: tuple | None              # the decoding models are compared by (colorize: gain 1)
    best: tuple[float, dict] = (float("-inf"), {})
    history: list[dict] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    stopped: str = "budget"
    frozen: bool = False             # the pretrained encoder is held still (the first share of the budget)
    rng: random.Random = field(default_factory=random.Random)
    loaded_key: tuple = ()           # what the loaded pairs and the loss depend on (Loaded.key)

    @property
    def net(self):
        return self.model.net

    @property
    def scored(self):
        """What is evaluated and kept: the weight average, or the raw weights."""
        return self.ema.net if self.ema is not None else self.model.net


def train(model: Model, train_pairs: list[PairRef], val_pairs: list[PairRef], cfg: TrainConfig,
          log=print, progress: bool | None = None, should_stop=lambda: False,
          ends_by: float | None = None, loaded: Loaded | None = None) -> TrainResult:
    """Train model in place on train_pairs, keep the best state by validation PSNR, return it scored.

    ends_by: a time.monotonic() by which the training loop stops, whatever cfg.minutes says; the
    caller leaves room after it for the calibration and the full-size scores (result.seconds).
    loaded: an earlier result's .loaded, reused when it fits this model (saves loading the pairs again).
    """
    t0 = time.monotonic()
    run = _set_up(model, train_pairs, val_pairs, cfg, log, progress, ends_by, loaded)
    last_eval = t1 = time.monotonic()
    while run.budget.fraction(run.step) < 1.0 and run.stopped == "budget":
        _epoch(run, should_stop)
        done = run.budget.fraction(run.step) >= 1.0 or run.stopped != "budget"
        if done or time.monotonic() - last_eval >= cfg.eval_every_s:
            _evaluate(run)
            last_eval = time.monotonic()
    run.bar.close()
    t2 = time.monotonic()
    result = _finish(run, val_pairs)
    result.seconds = {"set_up": round(t1 - t0, 1), "training": round(t2 - t1, 1), **result.seconds}
    result.loaded = Loaded(run.loaded_key, run.train_set, run.val_set, run.objective)
    if ends_by is not None:
        result.seconds["training_allotted"] = round(run.budget.seconds, 1)
    return result


def _set_up(model: Model, train_pairs, val_pairs, cfg: TrainConfig, log, progress, ends_by=None,
            loaded: Loaded | None = None) -> _Run:
    """Load the pairs, build the loss and the optimiser, and score the starting weights."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task, net = model.task, model.net
    key = (model.task_cfg, net.cfg.out_stride, cfg.rebalance)
    if loaded is not None and loaded.key == key:
        train_set, val_set, objective = loaded.train_set, loaded.val_set, loaded.objective
        objective.cfg = cfg
    else:
        floor = error_floor(task, net.cfg.out_stride) if task.name == "colorize" else None
        train_set = PairSet(train_pairs, task.shape_for, task.in_channels, log=log, floor=floor)
        val_set = PairSet(val_pairs, task.shape_for, task.in_channels, log=log, floor=floor)
        objective = None
    if len(train_set) == 0:
        raise TrainingError("no usable training pairs")
    if len(val_set) == 0:
        raise TrainingError("no usable validation pairs; add pairs or raise the validation share")
    log(f"training {task.name} on {len(train_set)} pairs, validating on {len(val_set)}")
    objective = objective or Objective(task, train_set, cfg)
    dev = pick_device(cfg.device)
    net.to(dev)
    if objective.weights is not None:
        objective.weights = objective.weights.to(dev)
    fine_tune = bool(model.meta.get("version") or model.meta.get("metrics"))
    lr = cfg.fine_tune_lr if fine_tune else cfg.lr
    # A pretrained encoder learns at a fraction of the decoder's rate: it already knows what things are.
    groups = [{"params": net.decoder_parameters(), "lr": lr}]
    if net.encoder is not None:
        groups.append({"params": list(net.encoder.parameters()), "lr": lr * cfg.encoder_lr})
        log(f"pretrained encoder {net.cfg.encoder}: held still for the first {cfg.freeze_encoder:.0%} of the "
            f"budget, then trained at {cfg.encoder_lr:g} of the decoder's learning rate")
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = sum(1 for _ in train_set.batches(cfg.batch_size, random.Random(0), augment=False))
    # Models are compared on their plain output: the colorize decoding knobs were calibrated
    # for the starting weights and are calibrated again at the end, for the weights kept.
    plain = (("gain", 1.0),) if task.name == "colorize" else None
    run = _Run(model, cfg, objective, train_set, val_set, opt, [g["lr"] for g in groups],
               _Budget(cfg, steps_per_epoch, ends_by), _progress_bar(progress, cfg, steps_per_epoch),
               _Average(net, cfg.ema) if cfg.ema else None, log, plain)
    run.rng.seed(cfg.seed)
    run.loaded_key = key
    net.eval()
    t = time.monotonic()
    first = working_scores(objective, net, val_set, cfg.batch_size, (plain,))
    if ends_by is not None:
        # The loop's last evaluation, after ends_by otherwise, takes about as long as this one.
        run.budget.ends_by -= time.monotonic() - t
        if cfg.minutes is None or run.budget.seconds < 60 * cfg.minutes:
            run.bar.write(f"training for {run.budget.seconds:.0f} s: the rest of the time is left for the "
                          f"calibration and scores that follow", log)
    run.best = (first["psnr"][plain], copy.deepcopy(net.state_dict()))
    run.history.append({"step": 0, "epoch": 0, "seconds": 0.0, "train_loss": None,
                        "val_loss": first["loss"], "val_psnr": run.best[0]})
    run.bar.write(f"start: val loss {first['loss']:.4f}, val PSNR {run.best[0]:.2f} dB (working size)", log)
    return run


def _hold_encoder(run: _Run, frac: float) -> None:
    """Train mode for the decoder; the encoder's batch norm keeps its ImageNet statistics throughout
    (batches of 8 would only add noise to them), and its weights are still for the first share."""
    net = run.net
    net.train()
    if net.encoder is None:
        return
    net.encoder.eval()
    frozen = frac < run.cfg.freeze_encoder
    if frozen != run.frozen or run.step == 0:
        net.encoder.requires_grad_(not frozen)
        if run.frozen and not frozen:
            run.bar.write(f"step {run.step}: the encoder trains from here on", run.log)
        run.frozen = frozen


def _epoch(run: _Run, should_stop) -> None:
    """One pass over the training pairs, or what is left of the budget of it."""
    task, net, dev = run.model.task, run.net, next(run.net.parameters()).device
    for before, after, floor in run.train_set.batches(run.cfg.batch_size, run.rng):
        frac = run.budget.fraction(run.step)
        if frac >= 1.0:
            return
        if should_stop():
            run.stopped = "stopped"
            return
        _hold_encoder(run, frac)
        before, after = before.to(dev, non_blocking=True), after.to(dev, non_blocking=True)
        for g, peak in zip(run.opt.param_groups, run.lrs):
            g["lr"] = peak * _lr_factor(frac, run.cfg.warmup)
        loss = run.objective.loss(net(task.as_input(before)), before, after, floor.to(dev))
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {run.step}; the model was not changed")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        run.opt.step()
        if run.ema is not None:
            run.ema.update(net, run.step)
        run.step += 1
        run.running.append(loss.item())
        run.bar.update(run.step, run.budget.fraction(run.step), loss.item())
    run.epoch += 1


def _evaluate(run: _Run) -> None:
    """Score the kept weights on the validation pairs; remember them when they are the best yet."""
    scored = run.scored
    scored.eval()
    s = working_scores(run.objective, scored, run.val_set, run.cfg.batch_size, (run.plain,))
    psnr = s["psnr"][run.plain]
    entry = {"step": run.step, "epoch": run.epoch, "seconds": round(time.monotonic() - run.budget.start, 1),
             "train_loss": mean(run.running), "val_loss": s["loss"], "val_psnr": psnr}
    run.history.append(entry)
    run.running = []
    run.bar.write(f"epoch {run.epoch} step {run.step}: train loss {entry['train_loss']:.4f}, "
                  f"val loss {s['loss']:.4f}, val PSNR {psnr:.2f} dB", run.log)
    if psnr > run.best[0]:
        run.best = (psnr, copy.deepcopy(scored.state_dict()))


def _finish(run: _Run, val_pairs: list[PairRef]) -> TrainResult:
    """Take the best weights back, calibrate the colorize decoding for them, and score them at full size."""
    model, net = run.model, run.net
    net.load_state_dict(run.best[1])
    net.requires_grad_(True)
    net.eval()
    t0 = time.monotonic()
    if model.task.name == "colorize":
        model.task_cfg = replace(model.task_cfg, **calibrate(run.objective, net, run.val_set, run.cfg, run.log))
        model.task = make_task(model.task_cfg, net.cfg.multiple)
    t1 = time.monotonic()
    net.cpu()  # saved and served from the CPU; full-size recombination is CPU work anyway
    metrics = evaluate(model, val_pairs, mean_chroma=mean_chroma(run.train_set))
    run.log("validation: " + metrics.described())
    seconds = {"calibration": round(t1 - t0, 1), "scoring": round(time.monotonic() - t1, 1)}
    return TrainResult(model, run.history, metrics, run.stopped, seconds)


class _Average:
    """An exponential moving average of a network's weights.

    The decay warms up as min(decay, (1 + step) / (10 + step)), so a short
    run (a fine-tune of a few dozen steps) is not held back at its start;
    normalization statistics are copied, not averaged.
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        self.net, self.decay = copy.deepcopy(net), decay
        self.net.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        for a, b in zip(self.net.parameters(), net.parameters()):
            a.lerp_(b, 1 - d)
        for a, b in zip(self.net.buffers(), net.buffers()):
            a.copy_(b)


class _progress_bar:
    """tqdm on a terminal, nothing otherwise (logs carry the evaluations)."""

    def __init__(self, enabled: bool | None, cfg: TrainConfig, steps_per_epoch: int):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        self.pos = 0

    def update(self, step: int, frac: float, loss: float):
        if self.bar is not None:
            target = int(frac * 1000)
            self.bar.update(target - self.pos)
            self.pos = target
            self.bar.set_postfix_str(f"step {step} loss {loss:.4f}", refresh=False)

    def write(self, msg: str, log):
        """log(msg) with the bar cleared first and drawn again after, so the line is not cut by it."""
        if self.bar is None:
            log(msg)
            return
        with self.bar.external_write_mode(file=self.bar.fp):
            log(msg)

    def close(self):
        if self.bar is not None:
            self.bar.close()
