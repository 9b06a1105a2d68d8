"""Training: the loop, the losses, model selection, temperature calibration, evaluation."""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace

import torch

from .checkpoint import Model
from .color import rgb_to_ycc
from .data import PairRef, PairSet, load_pair
from .images import plain
from .metrics import colorfulness, mean, psnr, tint
from .objective import Objective, error_floor
from .predictor import Predictor, pick_device
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
    ce_weight: float = 0.5         # colorize bins/blend: weight of the rebalanced cross-entropy
    regression_loss: str = "psnr"  # colorize regression/blend: psnr (per-image log of the RGB error, see
                                   # objective.py) | smooth_l1 (near the median) | mse (the mean over pixels)
    vividness: float = 0.65        # colorize: calibrate the decoding to reach this share of the truth's colorfulness
    ema: float = 0.99              # evaluate and keep an exponential moving average of the weights, with this
                                   # decay per step (0: the raw weights); smooths the step-to-step noise
    eval_every_s: float = 60.0     # evaluate on validation pairs at most this often (and at the end)
    threads: int | None = None     # torch CPU threads; None leaves torch's default
    device: str = "cpu"            # cpu | cuda | cuda:N | auto (CUDA when present)

    def __post_init__(self):
        if self.minutes is None and self.epochs is None:
            raise ValueError("give a budget: minutes, epochs or both")


@dataclass
class TrainResult:
    model: Model
    history: list[dict] = field(default_factory=list)   # one entry per evaluation
    metrics: dict = field(default_factory=dict)          # final scores on the validation pairs
    stopped: str = ""                                    # why training ended


class _Budget:
    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg, self.spe = cfg, max(1, steps_per_epoch)
        self.start = time.monotonic()

    def fraction(self, step: int) -> float:
        parts = []
        if self.cfg.minutes is not None:
            parts.append((time.monotonic() - self.start) / (60 * self.cfg.minutes))
        if self.cfg.epochs is not None:
            parts.append(step / (self.cfg.epochs * self.spe) if self.cfg.epochs else 1.0)
        return min(1.0, max(parts))


def _lr_factor(frac: float, warmup: float) -> float:
    if frac < warmup:
        return (frac + 1e-3) / warmup
    return 0.5 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))


def _forward_all(net, task, data: PairSet, batch_size: int):
    """Yield (y, before, after, floor) over a PairSet without augmentation, on the network's device."""
    dev = next(net.parameters()).device
    with torch.inference_mode():
        for before, after, floor in data.batches(batch_size, random.Random(0), augment=False):
            before, after = before.to(dev), after.to(dev)
            yield net(task.as_input(before)), before, after, floor.to(dev)


def _working_scores(objective: Objective, net, data: PairSet, batch_size: int, knobs=(None,)) -> dict:
    """Mean loss, and mean PSNR and colorfulness at working size per decoding setting.

    The PSNR counts each pair's error floor (see objective.error_floor) beside the
    working-size error, so it is about the full-size PSNR that is judged.

    A setting is None (the task's own knobs) or a tuple of (knob, value) items
    overriding some of them: temperature, blend, gain, tint_gain (see Colorize.chroma).
    """
    task = objective.task
    losses, psnrs, colors = [], {t: [] for t in knobs}, {t: [] for t in knobs}
    truth_colors = []
    for y, before, after, floor in _forward_all(net, task, data, batch_size):
        losses.append(objective.loss(y, before, after, floor).item())
        truth = task.target(after).clamp(0, 1) if task.name == "translate" else after
        for t in knobs:
            out = objective.render(y, before, None if t is None else dict(t))
            # Plus each pair's floor: the full-size error is what is judged, and it is the sum.
            mse = ((out - truth) ** 2).flatten(1).mean(1).add(floor).clamp(min=1e-10)
            psnrs[t] += (-10 * torch.log10(mse)).tolist()
            if task.name == "colorize":
                colors[t] += _colorfulness_t(out)
        if task.name == "colorize":
            truth_colors += _colorfulness_t(after)
    return {"loss": mean(losses), "psnr": {t: mean(v) for t, v in psnrs.items()},
            "colorfulness": {t: mean(v) for t, v in colors.items()}, "truth_colorfulness": mean(truth_colors)}


def _colorfulness_t(rgb: torch.Tensor) -> list[float]:
    """(B, 3, h, w) RGB in [0, 1] -> each image's colorfulness, as metrics.colorfulness computes it."""
    r, g, b = (rgb * 255).double().flatten(2).unbind(1)   # (B, h*w) each
    rg, yb = r - g, 0.5 * (r + g) - b
    return (torch.hypot(rg.std(1, unbiased=False), yb.std(1, unbiased=False))
            + 0.3 * torch.hypot(rg.mean(1), yb.mean(1))).tolist()


GAINS = tuple(round(1 + 0.05 * i, 2) for i in range(17))          # 1.0 .. 1.8: the whole chroma
DETAIL_GAINS = tuple(round(1 + 0.05 * i, 2) for i in range(25))   # 1.0 .. 2.2: departures from the tint
TINT_GAINS = tuple(round(0.9 + 0.1 * i, 1) for i in range(8))     # 0.9 .. 1.6: the image's mean chroma


def _settings(head: str) -> list[tuple]:
    """The first round of decoding settings calibrate() tries for a colorize head: knob x whole-chroma gain."""
    if head == "bins":
        knob = [("temperature", round(1.0 - 0.05 * i, 2)) for i in range(18)]  # 1.0 .. 0.15
    elif head == "blend":
        knob = [("blend", 0.25 * i) for i in range(5)]                        # 0 .. 1
    else:
        knob = [None]
    return [tuple(k for k in (k1, ("gain", g)) if k) for k1 in knob for g in GAINS]


def _split_gains(setting: tuple) -> list[tuple]:
    """The second round: the chosen knob with separate gains for the tint and the departures from it."""
    knob = tuple(kv for kv in setting if kv[0] != "gain")
    tints = sorted(set(TINT_GAINS) | {dict(setting)["gain"]})  # the first round's choice is among them
    return [knob + (("gain", g), ("tint_gain", t)) for g in DETAIL_GAINS for t in tints]


def calibrate(objective: Objective, net, val: PairSet, cfg: TrainConfig, log=print) -> dict:
    """Choose the decoding knobs: the best PSNR among settings reaching vividness x the truth's colorfulness.

    The knobs are the temperature of a bins head or the share of the vivid
    decode of a blend head, and for every head two chroma gains: regression
    toward the mean leaves colors paler than they are, and a gain above 1
    gives some of it back at a small cost in PSNR. The first round scales
    the whole chroma and picks the knob; the second gives the image's tint
    and the departures from it gains of their own (see tasks.vivid). The
    settings are scored at working size on the training run's own
    validation pairs, never on a test set. When none reaches the goal, the
    most colorful one is taken.
    """
    first = _settings(objective.task.cfg.head)
    s1 = _working_scores(objective, net, val, cfg.batch_size, first)
    goal = cfg.vividness * s1["truth_colorfulness"]
    second = _split_gains(_best(s1, first, goal))
    s2 = _working_scores(objective, net, val, cfg.batch_size, second)
    # The second round holds the first's winner (tint gain = gain), so it can only do as well or better.
    best = _best(s2, second, goal)
    plain = first[0]
    log(f"decoding {', '.join(f'{k} {v}' for k, v in best)}: colorfulness {s2['colorfulness'][best]:.1f} "
        f"(goal {goal:.1f}), working-size PSNR {s2['psnr'][best]:.2f} dB; "
        f"{', '.join(f'{k} {v}' for k, v in plain)}: {s1['colorfulness'][plain]:.1f}, {s1['psnr'][plain]:.2f} dB")
    return dict(best)


def _best(s: dict, settings: list[tuple], goal: float) -> tuple:
    reaching = [k for k in settings if s["colorfulness"][k] >= goal]
    if reaching:
        return max(reaching, key=lambda k: s["psnr"][k])
    return max(settings, key=lambda k: s["colorfulness"][k])


def train(model: Model, train_pairs: list[PairRef], val_pairs: list[PairRef], cfg: TrainConfig,
          log=print, progress: bool | None = None, should_stop=lambda: False) -> TrainResult:
    """Train model in place on train_pairs, keep the best state by validation PSNR, return it scored."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    task, net = model.task, model.net
    floor = error_floor(task, net.cfg.out_stride) if task.name == "colorize" else None
    train_set = PairSet(train_pairs, task.shape_for, task.in_channels, log=log, floor=floor)
    val_set = PairSet(val_pairs, task.shape_for, task.in_channels, log=log, floor=floor)
    if len(train_set) == 0:
        raise TrainingError("no usable training pairs")
    if len(val_set) == 0:
        raise TrainingError("no usable validation pairs; add pairs or raise the validation share")
    log(f"training {task.name} on {len(train_set)} pairs, validating on {len(val_set)}")
    objective = Objective(task, train_set, cfg)
    dev = pick_device(cfg.device)
    net.to(dev)
    if objective.weights is not None:
        objective.weights = objective.weights.to(dev)
    fine_tune = bool(model.meta.get("version") or model.meta.get("metrics"))
    lr = cfg.fine_tune_lr if fine_tune else cfg.lr
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = sum(1 for _ in train_set.batches(cfg.batch_size, random.Random(0), augment=False))
    budget = _Budget(cfg, steps_per_epoch)
    bar = _progress_bar(progress, cfg, steps_per_epoch)
    ema = _Average(net, cfg.ema) if cfg.ema else None
    scored = ema.net if ema is not None else net   # what is evaluated and kept

    # Models are compared on their plain output: the colorize decoding knobs were calibrated
    # for the starting weights and are calibrated again at the end, for the weights kept.
    plain = (("gain", 1.0),) if task.name == "colorize" else None
    net.eval()
    first = _working_scores(objective, net, val_set, cfg.batch_size, (plain,))
    best = (first["psnr"][plain], copy.deepcopy(net.state_dict()))
    history = [{"step": 0, "epoch": 0, "seconds": 0.0, "train_loss": None,
                "val_loss": first["loss"], "val_psnr": best[0]}]
    log(f"start: val loss {first['loss']:.4f}, val PSNR {best[0]:.2f} dB (working size)")
    step, epoch, last_eval, stopped = 0, 0, time.monotonic(), "budget"
    running = []
    while budget.fraction(step) < 1.0 and stopped == "budget":
        net.train()
        for before, after, floor in train_set.batches(cfg.batch_size, rng):
            before, after = before.to(dev, non_blocking=True), after.to(dev, non_blocking=True)
            frac = budget.fraction(step)
            if frac >= 1.0:
                break
            if should_stop():
                stopped = "stopped"
                break
            for g in opt.param_groups:
                g["lr"] = lr * _lr_factor(frac, cfg.warmup)
            loss = objective.loss(net(task.as_input(before)), before, after, floor.to(dev))
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step}; the model was not changed")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if ema is not None:
                ema.update(net, step)
            step += 1
            running.append(loss.item())
            bar.update(step, budget.fraction(step), loss.item())
        else:
            epoch += 1
        done = budget.fraction(step) >= 1.0 or stopped != "budget"
        if done or time.monotonic() - last_eval >= cfg.eval_every_s:
            scored.eval()
            s = _working_scores(objective, scored, val_set, cfg.batch_size, (plain,))
            psnr = s["psnr"][plain]
            last_eval = time.monotonic()
            entry = {"step": step, "epoch": epoch, "seconds": round(time.monotonic() - budget.start, 1),
                     "train_loss": mean(running), "val_loss": s["loss"], "val_psnr": psnr}
            history.append(entry)
            running = []
            bar.write(f"epoch {epoch} step {step}: train loss {entry['train_loss']:.4f}, "
                      f"val loss {s['loss']:.4f}, val PSNR {psnr:.2f} dB", log)
            if psnr > best[0]:
                best = (psnr, copy.deepcopy(scored.state_dict()))
    bar.close()
    net.load_state_dict(best[1])
    net.eval()
    if task.name == "colorize":
        model.task_cfg = replace(model.task_cfg, **calibrate(objective, net, val_set, cfg, log))
        model.task = make_task(model.task_cfg, net.cfg.multiple)
    net.cpu()  # saved and served from the CPU; full-size recombination is CPU work anyway
    metrics = evaluate(model, val_pairs, mean_chroma=mean_chroma(train_set))
    log("validation: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float)))
    return TrainResult(model, history, metrics, stopped)


def mean_chroma(data: PairSet) -> tuple[float, float]:
    """Mean (Cb, Cr) offsets of the training afters on 0..255: the mean-tint baseline's color."""
    total, n = torch.zeros(2), 0
    for _, after, _ in data.items:
        c = rgb_to_ycc(after[None].float() / 255.0)[0, 1:]
        total += c.sum(dim=(1, 2))
        n += c[0].numel()
    return tuple((total / max(n, 1) * 255).tolist())


def evaluate(model: Model, pairs: list[PairRef], mean_chroma: tuple[float, float] | None = None,
             device: str = "cpu") -> dict:
    """Full-resolution scores over pairs: the model, and the baselines beside it."""
    pred = Predictor(model, device=device, max_batch=8)
    scores = {"psnr": [], "colorfulness": [], "truth_colorfulness": [], "gray_psnr": [], "tint_psnr": []}
    tint_chroma = mean_chroma or tuple(model.meta.get("train_mean_chroma") or (0.0, 0.0))
    for p in pairs:
        before, after = load_pair(p)
        out = pred.predict([plain(before)])[0]
        truth = after if model.task.name == "colorize" or model.task.cfg.out_channels == 3 else after.convert("L")
        scores["psnr"].append(psnr(out, truth))
        scores["colorfulness"].append(colorfulness(out))
        scores["truth_colorfulness"].append(colorfulness(truth))
        gray = before.convert("L")
        scores["gray_psnr"].append(psnr(gray.convert("RGB") if truth.mode == "RGB" else gray, truth))
        if model.task.name == "colorize":
            scores["tint_psnr"].append(psnr(tint(gray, *tint_chroma), truth))
    out = {k: mean(v) for k, v in scores.items() if v}
    out["pairs"] = len(pairs)
    if model.task.name == "colorize":
        out["train_mean_chroma"] = list(tint_chroma)
    return out


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
        if self.bar is not None:
            self.bar.write(msg)
        else:
            log(msg)

    def close(self):
        if self.bar is not None:
            self.bar.close()
