"""The promotion rule, and what follows a finished run: decide, register (or write --out), report, log.

A challenger is promoted only when it beats the champion's PSNR by [retrain]
margin on the same held-out pairs, is not less colorful and not worse on the
rebalanced ab AuC (colorize: hue right, not only vivid), and beats the gray
and mean-tint baselines; otherwise it is registered as rejected, with
its scores. The service's nightly job (retrain.Retrainer) and `reverser train`
both end a run with conclude().
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from loguru import logger

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


def decide(task: str, challenger: dict, champion: dict | None, margin: float,
           force: bool = False, no_promote: bool = False) -> tuple[bool, str]:
    """(promote?, why) by the promotion rule; force and no_promote override it, and say so."""
    psnr = challenger.get("psnr", math.nan)
    faults = []
    if not math.isfinite(psnr):
        faults.append("its PSNR is not a number")
    if champion is not None and math.isfinite(psnr):
        gain = psnr - champion["psnr"]
        if gain < margin:
            faults.append(f"PSNR {psnr:.2f} dB is {gain:+.2f} dB against the champion's {champion['psnr']:.2f}, "
                          f"short of the margin of {margin:g} dB")
        if task == "colorize" and challenger["colorfulness"] < champion["colorfulness"] * (1 - COLOR_TOLERANCE):
            faults.append(f"it is less colorful ({challenger['colorfulness']:.1f} against the champion's "
                          f"{champion['colorfulness']:.1f})")
        if task == "colorize" and "auc" in challenger and "auc" in champion \
                and challenger["auc"] < champion["auc"] - AUC_TOLERANCE:
            faults.append(f"its hues are worse (ab AuC {challenger['auc']:.1f} against the champion's "
                          f"{champion['auc']:.1f})")
    for key, label in (("gray_psnr", "gray"), ("tint_psnr", "mean-tint")):
        if key in challenger and math.isfinite(psnr) and psnr < challenger[key] + margin:
            faults.append(f"it does not beat the {label} baseline ({psnr:.2f} dB against {challenger[key]:.2f})")
    good = _summary(challenger, champion)
    if force:
        return True, f"forced (--force): {good}" + (f"; by the rule it would fail: {'; '.join(faults)}"
                                                      if faults else "")
    if faults:
        return False, "; ".join(faults)
    if no_promote:
        return False, f"not promoted (--no-promote), though it passes the rule: {good}"
    return True, good


def _summary(ch: dict, champ: dict | None) -> str:
    parts = [f"PSNR {champ['psnr']:.2f} -> {ch['psnr']:.2f} dB" if champ else f"PSNR {ch.get('psnr', math.nan):.2f} dB"]
    if "colorfulness" in ch and "tint_psnr" in ch:
        parts.append(f"colorfulness {champ['colorfulness']:.1f} -> {ch['colorfulness']:.1f}" if champ
                     else f"colorfulness {ch['colorfulness']:.1f}")
    if "auc" in ch:
        parts.append(f"ab AuC {champ['auc']:.1f} -> {ch['auc']:.1f}" if champ and "auc" in champ
                     else f"ab AuC {ch['auc']:.1f}")
    base = [f"{label} {ch[k]:.2f}" for k, label in (("gray_psnr", "gray"), ("tint_psnr", "mean tint")) if k in ch]
    if base:
        parts.append("baselines " + ", ".join(base) + " dB")
    return "; ".join(parts)


def conclude(cfg: Config, queue: str, job: TrainJob, result: dict | None, *, who: str, started: str,
             registry: Registry | None = None, out: Path | None = None, force: bool = False,
             no_promote: bool = False, error: str | None = None) -> TrainingOutcome:
    """Decide, register (or write --out), report and log one finished (or failed) run."""
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
        log.error("retrain {}: training failed, the champion (version {}) keeps serving: {}", queue, before, why)
        outcome = TrainingOutcome(queue, "failed", why, None, before, report)
        finish_report(report, data, outcome, result or {}, task)
        return outcome

    challenger, champion = result["metrics"], result.get("champion_metrics")
    promote, why = decide(task, challenger, champion, cfg.retrain.margin, force, no_promote)
    if registry is not None and promote and not force and before != job.parent:
        # Someone promoted or rolled back by hand while this trained: the scores compare with a model
        # that no longer serves, and a person's choice wins over a stale comparison.
        promote, why = False, (f"the champion changed from version {job.parent} to {before} while this trained; "
                               f"not promoted (it scored: {why})")
    if registry is not None:
        version = registry.add(Path(job.out), promote, who, why, report=str(report))
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
    if champion and math.isfinite(challenger.get("psnr", math.nan)) and math.isfinite(champion.get("psnr", math.nan)):
        gain = challenger["psnr"] - champion["psnr"]
    outcome = TrainingOutcome(queue, decision, why, version, after, report, gain)
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
