"""The promotion rule, and what follows a finished run: decide, register (or write --out), report, log.

A challenger is promoted only when it beats the champion's PSNR by [retrain]
margin on the same held-out pairs, with [retrain] promotion_confidence over
those pairs' per-image gains (a paired bootstrap: a gain that rests on one or
two pictures is not one), is not less colorful and not worse on the
rebalanced ab AuC (colorize: hue right, not only vivid), and beats the gray
and mean-tint baselines; fewer than [retrain] min_holdout_pairs held-out
pairs decide nothing. Otherwise it is registered as rejected, with its scores. The service's nightly job (retrain.Retrainer) and `reverser train`
both end a run with conclude().
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from loguru import logger

from unet.scores import Scores

from ..core.config import Config
from ..core.fs import now_iso
from .challenger import TrainJob
from .registry import Registry
from .report import finish_report

# "Without a worse colorfulness": a drop within 5% is noise between nights, not a duller model.
COLOR_TOLERANCE = 0.05
# "Without a worse ab AuC", in points: two models scored on the same 73 held-out plates differ by a
# bootstrap standard deviation of 0.22 points (resampling the pairs), so a drop within 0.5 is noise.
AUC_TOLERANCE = 0.5
RESAMPLES = 10_000    # bootstrap resamples of the held-out pairs: the bound moves by about 0.01 dB between seeds
SEED = 0              # fixed: the same scores always give the same decision


@dataclass(frozen=True)
class PairedGain:
    """The challenger's per-image PSNR gains over the champion on the same held-out pairs, summed up."""

    pairs: int              # held-out pairs both models were scored on
    mean_db: float          # mean per-image gain
    lower_db: float         # one-sided lower bound of the mean gain at `confidence` (paired bootstrap)
    confidence: float
    better: int             # pairs the challenger scores higher on
    top2_share: float       # the two largest gains' share of the summed gain (1.0: all of it)
    gains_db: tuple[float, ...] = ()

    def describe(self) -> str:
        return (f"mean gain {self.mean_db:+.2f} dB over {self.pairs} held-out pairs, at least "
                f"{self.lower_db:+.2f} dB with {self.confidence:.0%} confidence; better on {self.better} of "
                f"{self.pairs}")


def paired_gain(ours: list[float], theirs: list[float], confidence: float) -> PairedGain:
    """The paired bootstrap over images: resample the pairs, take the confidence quantile's lower bound.

    Hand-written with numpy (a dozen lines) rather than SciPy, which the service does not depend on.
    """
    d = np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64)
    n = len(d)
    rng = np.random.default_rng(SEED)
    means = d[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    lower = float(np.quantile(means, 1 - confidence))
    positive = np.sort(d[d > 0])[::-1]
    total = float(positive.sum())
    share = float(positive[:2].sum() / total) if total > 0 else 0.0
    return PairedGain(n, float(d.mean()), lower, confidence, int((d > 0).sum()), round(share, 3),
                      tuple(round(float(x), 3) for x in d))


def too_few_held_out(held_out: int, total: int, minimum: int, val_percent: float) -> str:
    """What to say when held_out pairs are too few to judge a model by: how many are needed, and how."""
    if total and minimum <= total // 2:
        need = min(50, math.ceil(100 * minimum / total * 1.2))  # by name hash: a little over the share
        how = (f"raise --val-percent (now {val_percent:g}%; about {need}% holds out {minimum} of {total}) "
               f"or [retrain] val_percent, or add pairs")
    else:
        how = (f"add pairs (at {val_percent:g}% held out, about {math.ceil(100 * minimum / val_percent)} are "
               f"needed; --val-percent and [retrain] val_percent go up to 50)")
    return (f"only {held_out} held-out pairs scored the models; promotion needs at least {minimum} "
            f"([retrain] min_holdout_pairs): {how}")


@dataclass
class TrainingOutcome:
    """What became of one training run."""

    queue: str
    decision: str               # promoted | rejected | failed | skipped | written (--out)
    why: str
    version: int | None = None  # the challenger's registry version
    champion: int | None = None  # the champion after the run
    report: Path | None = None
    psnr_gain_db: float | None = None  # the challenger's PSNR minus the champion's, on the same held-out pairs
    rule: dict | None = None    # the promotion rule's settings and figures (report.json "rule")


def decide(task: str, challenger: Scores, champion: Scores | None, margin: float,
           force: bool = False, no_promote: bool = False, *, confidence: float | None = None,
           min_pairs: int = 0, few: str | None = None) -> tuple[bool, str]:
    """(promote?, why) by the promotion rule; force and no_promote override it, and say so.

    With confidence, the per-image gains (psnr_each) must clear the margin at that confidence;
    with fewer than min_pairs held-out pairs nothing is promoted (few: the message saying so).
    """
    psnr = challenger.psnr
    faults, sure = [], None
    if not math.isfinite(psnr):
        faults.append("its PSNR is not a number")
    held = challenger.pairs
    if held < min_pairs:
        faults.append(few or f"only {held} held-out pairs scored it; promotion needs at least {min_pairs}")
    if champion is not None and math.isfinite(psnr):
        gain = psnr - champion.psnr
        if gain < margin:
            faults.append(f"PSNR {psnr:.2f} dB is {gain:+.2f} dB against the champion's {champion.psnr:.2f}, "
                          f"short of the margin of {margin:g} dB")
        elif confidence is not None:
            test = gain_of(challenger, champion, confidence)
            if test is None:
                faults.append("there are no per-image scores to compare it with the champion image by image")
            elif test.lower_db < margin:
                faults.append(f"its gain is not sure: {test.describe()}, short of the margin of {margin:g} dB"
                              + (f" (the two best pictures give {test.top2_share:.0%} of it)"
                                 if test.top2_share >= 0.5 else ""))
            else:
                sure = test.describe()
        if task == "colorize" and challenger.colorfulness is not None and champion.colorfulness is not None \
                and challenger.colorfulness < champion.colorfulness * (1 - COLOR_TOLERANCE):
            faults.append(f"it is less colorful ({challenger.colorfulness:.1f} against the champion's "
                          f"{champion.colorfulness:.1f})")
        if task == "colorize" and challenger.auc is not None and champion.auc is not None \
                and challenger.auc < champion.auc - AUC_TOLERANCE:
            faults.append(f"its hues are worse (ab AuC {challenger.auc:.1f} against the champion's "
                          f"{champion.auc:.1f})")
    for base, label in ((challenger.gray_psnr, "gray"), (challenger.tint_psnr, "mean-tint")):
        if base is not None and math.isfinite(psnr) and psnr < base + margin:
            faults.append(f"it does not beat the {label} baseline ({psnr:.2f} dB against {base:.2f})")
    good = _summary(challenger, champion) + (f"; {sure}" if sure else "")
    if force:
        return True, f"forced (--force): {good}" + (f"; by the rule it would fail: {'; '.join(faults)}"
                                                      if faults else "")
    if faults:
        return False, "; ".join(faults)
    if no_promote:
        return False, f"not promoted (--no-promote), though it passes the rule: {good}"
    return True, good


def gain_of(challenger: Scores, champion: Scores | None, confidence: float) -> PairedGain | None:
    """The paired test of two models' per-image scores on the same pairs; None without them."""
    ours, theirs = challenger.psnr_each, champion.psnr_each if champion else ()
    if not ours or not theirs or len(ours) != len(theirs):
        return None
    return paired_gain(ours, theirs, confidence)


def _summary(ch: Scores, champ: Scores | None) -> str:
    parts = [f"PSNR {champ.psnr:.2f} -> {ch.psnr:.2f} dB" if champ else f"PSNR {ch.psnr:.2f} dB"]
    if ch.colorfulness is not None and ch.tint_psnr is not None:
        parts.append(f"colorfulness {champ.colorfulness:.1f} -> {ch.colorfulness:.1f}"
                     if champ and champ.colorfulness is not None else f"colorfulness {ch.colorfulness:.1f}")
    if ch.auc is not None:
        parts.append(f"ab AuC {champ.auc:.1f} -> {ch.auc:.1f}" if champ and champ.auc is not None
                     else f"ab AuC {ch.auc:.1f}")
    base = [f"{label} {v:.2f}" for v, label in ((ch.gray_psnr, "gray"), (ch.tint_psnr, "mean tint")) if v is not None]
    if base:
        parts.append("baselines " + ", ".join(base) + " dB")
    return "; ".join(parts)


def conclude(cfg: Config, queue: str, job: TrainJob, result: dict | None, *, who: str, started: str,
             registry: Registry | None = None, out: Path | None = None, force: bool = False,
             no_promote: bool = False, error: str | None = None, stopped: bool = False) -> TrainingOutcome:
    """Decide, register (or write --out), report and log one finished (or failed) run.

    stopped: the service stopped the run (a restart, a shutdown); recorded as failed, but logged as
    a warning: a normal stop is no error for `journalctl -p err` to show.
    """
    task, report = cfg.queues[queue].task, Path(job.report)
    log = logger.bind(queue=queue)
    before = registry.champion_version() if registry else None
    data = {"queue": queue, "who": who, "started": started, "finished": now_iso(), "task": task,
            "margin": cfg.retrain.margin, "champion_before": before, "job": asdict(job)}
    if result is None or "error" in result:
        why = (result or {}).get("error") or error or "the training child gave no result"
        if registry:
            registry.record("failed", who, why, version=None, frm=before, to=before, report=str(report))
        shutil.rmtree(job.out, ignore_errors=True)
        if stopped:
            log.warning("retrain {}: training stopped with the service ({}); the champion (version {}) keeps "
                        "serving, and the run is made again at the next start", queue, why, before)
        else:
            log.error("retrain {}: training failed, the champion (version {}) keeps serving: {}", queue, before,
                      why)
        outcome = TrainingOutcome(queue, "failed", why, None, before, report)
        finish_report(report, data, outcome, result or {}, task)
        return outcome

    challenger, champion = Scores.from_dict(result["metrics"]), Scores.from_dict(result.get("champion_metrics"))
    rc = cfg.retrain
    held, total = result.get("val_pairs", challenger.pairs), result.get("pairs") or 0
    few = too_few_held_out(held, total, rc.min_holdout_pairs, job.val_percent) \
        if isinstance(held, int) and held < rc.min_holdout_pairs else None
    test = gain_of(challenger, champion, rc.promotion_confidence)
    data["rule"] = {"margin_db": rc.margin, "confidence": rc.promotion_confidence,
                    "min_holdout_pairs": rc.min_holdout_pairs, "held_out_pairs": held,
                    "val_percent": job.val_percent, "too_few": few,
                    "paired": asdict(test) if test else None}
    if few:
        log.warning("{} {}: {}", "retrain" if registry else "train", queue, few)
    promote, why = decide(task, challenger, champion, rc.margin, force, no_promote,
                          confidence=rc.promotion_confidence, min_pairs=rc.min_holdout_pairs, few=few)
    if registry is not None and promote and not force and before != job.parent:
        # Someone promoted or rolled back by hand while this trained: the scores compare with a model
        # that no longer serves, and a person's choice wins over a stale comparison.
        promote, why = False, (f"the champion changed from version {job.parent} to {before} while this trained; "
                               f"not promoted (it scored: {why})")
    if registry is not None:
        version = registry.add(Path(job.out), promote, who, why, report=str(report), rule=data["rule"])
        after = registry.champion_version()
        decision = "promoted" if promote else "rejected"
        log.info("retrain {}: version {} {} ({}); champion is version {}", queue, version, decision, why, after)
    else:
        _replace_folder(Path(job.out), out)
        version, after, decision = None, None, "written"
        why = f"written to {out}; the registry is untouched. " + (
            f"Against the model it started from: {why}" if champion else _summary(challenger, None))
        log.info("train {}: model written to {}: {}", queue, out, _summary(challenger, champion))
    gain = None
    if champion and math.isfinite(challenger.psnr) and math.isfinite(champion.psnr):
        gain = challenger.psnr - champion.psnr
    outcome = TrainingOutcome(queue, decision, why, version, after, report, gain, data["rule"])
    finish_report(report, data, outcome, result, task)
    return outcome


def _replace_folder(new: Path, dest: Path) -> None:
    """Put a finished model folder at dest, replacing an older one with two renames."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)
