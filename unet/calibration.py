"""Scores at the working size, and the calibration of the colorize decoding knobs on held-out pairs.

Training keeps its best weights and calibrates its decoding by these scores:
the network's output rendered at the working size (as the loss sees it),
each pair's full-size error floor added to its PSNR (see objective.py).
"""

from __future__ import annotations

import random

import torch

from .data import PairSet
from .metrics import mean
from .objective import Objective
from .tasks import vivid


def _forward_all(net, task, data: PairSet, batch_size: int):
    """Yield (y, before, after, floor) over a PairSet without augmentation, on the network's device."""
    dev = next(net.parameters()).device
    with torch.inference_mode():
        for before, after, floor in data.batches(batch_size, random.Random(0), augment=False):
            before, after = before.to(dev), after.to(dev)
            yield net(task.as_input(before)), before, after, floor.to(dev)


def working_scores(objective: Objective, net, data: PairSet, batch_size: int, knobs=(None,)) -> dict:
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
        decoded = {}
        for t in knobs:
            out = objective.render(y, before, None if t is None else dict(t), _chroma(task, y, t, decoded))
            # Plus each pair's floor: the full-size error is what is judged, and it is the sum.
            mse = ((out - truth) ** 2).flatten(1).mean(1).add(floor).clamp(min=1e-10)
            psnrs[t] += (-10 * torch.log10(mse)).tolist()
            if task.name == "colorize":
                colors[t] += _colorfulness_t(out)
        if task.name == "colorize":
            truth_colors += _colorfulness_t(after)
    return {"loss": mean(losses), "psnr": {t: mean(v) for t, v in psnrs.items()},
            "colorfulness": {t: mean(v) for t, v in colors.items()}, "truth_colorfulness": mean(truth_colors)}


def _chroma(task, y: torch.Tensor, setting: tuple | None, decoded: dict) -> torch.Tensor | None:
    """A colorize setting's chroma, the costly decode (a softmax over the bins) done once for all the
    settings that differ only in their gains (tasks.vivid applies those after); None: let render decode."""
    knob = dict(setting or ())
    if task.name != "colorize" or "gain" not in knob:
        return None
    gain = knob.pop("gain")
    tint_gain = knob.pop("tint_gain", gain)   # a gain given alone scales the whole chroma (Colorize.chroma)
    key = tuple(sorted(knob.items()))
    if key not in decoded:
        decoded[key] = task.chroma(y, **knob, gain=1.0, tint_gain=1.0)   # gains of 1: as decoded
    return vivid(decoded[key], gain, tint_gain)


def _colorfulness_t(rgb: torch.Tensor) -> list[float]:
    """(B, 3, h, w) RGB in [0, 1] -> each image's colorfulness, as metrics.colorfulness computes it."""
    r, g, b = (rgb * 255).flatten(2).unbind(1)   # (B, h*w) each
    # In float32 (a few hundred settings are scored per image in calibrate(): double took half its time);
    # var_mean is one pass and stable, and agrees with float64 to about 1e-5.
    (rg_var, rg_mean), (yb_var, yb_mean) = (torch.var_mean(c, 1, correction=0) for c in (r - g, 0.5 * (r + g) - b))
    return (torch.hypot(rg_var.sqrt(), yb_var.sqrt()) + 0.3 * torch.hypot(rg_mean, yb_mean)).double().tolist()


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


def calibrate(objective: Objective, net, val: PairSet, cfg, log=print) -> dict:
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
    s1 = working_scores(objective, net, val, cfg.batch_size, first)
    goal = cfg.vividness * s1["truth_colorfulness"]
    second = _split_gains(_best(s1, first, goal))
    s2 = working_scores(objective, net, val, cfg.batch_size, second)
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
