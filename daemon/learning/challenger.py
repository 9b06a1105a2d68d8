"""Train a challenger and score it beside the champion: the body of the training child process.

    python -m daemon.learning.challenger JOB.json

The service starts this as a child (see retrain.py), so a crash, an
out-of-memory kill or a NaN here never touches conversion: the child gets
[retrain] threads and a higher niceness, writes its model into a staging
folder and its scores into <report>/result.json, and never changes the
registry; the parent decides. `reverser train` calls train_challenger() in
its own process instead, with a progress bar.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..core.fs import now_iso, write_json

RESULT, SHEET = "result.json", "sheet"
PARENT_ENV = "REVERSER_PARENT_PID"
SHEET_PAIRS = 4          # held-out pairs on the contact sheet
SAMPLE_PAIRS = 4         # without a champion, the scoring after training is timed on this many held-out pairs
AFTER_MARGIN_S = 5.0     # saving the model and drawing report.png: a few seconds kept for them too
THUMB = 128              # contact sheet image height, pixels


@dataclass(frozen=True)
class TrainJob:
    queue: str
    task: str                       # colorize | translate
    pairs: tuple[str, ...]          # pair folders: accumulated pairs, base pairs, or --pairs
    out: str                        # an empty folder the challenger's model folder is written into
    report: str                     # the run's report folder (result.json, sheet/, train.log)
    start: str | None = None        # model folder to fine-tune (the champion); None: a new network
    arch: str | None = None         # with start None: a model folder whose architecture to copy
    parent: int | None = None       # the champion's registry version (the challenger's parent)
    val_percent: float = 15.0       # held out by a hash of the pair name: the same pairs every night
    minutes: float | None = None    # training budget (TrainConfig.minutes)
    epochs: int | None = None       # training budget (TrainConfig.epochs)
    threads: int | None = None      # torch CPU threads; None: torch's default
    nice: int = 0                   # added niceness (the child lowers its own priority)
    swap: bool = False              # the pair folders hold the opposite direction: after -> before
    seed: int = 0                   # the run's random seed: the same data and seed train the same model

    def save(self, path: Path) -> Path:
        write_json(Path(path), asdict(self))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "TrainJob":
        raw = json.loads(Path(path).read_text())
        names = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in names}
        raw["pairs"] = tuple(raw["pairs"])
        return cls(**raw)


def _starting_model(job: TrainJob, log, gray_output: bool = False):
    from unet import load_model, new_model
    from unet.recipe import recipe

    if job.start:
        return load_model(job.start)
    if job.arch:
        shape = load_model(job.arch)
        log(f"new network with the architecture of {job.arch}")
        return new_model(shape.task_cfg, shape.net.cfg)
    log("new network with the training recipe's default architecture")
    return new_model(*recipe(job.task, gray_output))


def train_challenger(job: TrainJob, log=print, progress: bool | None = None, should_stop=lambda: False,
                     began: float | None = None) -> dict:
    """Train, save the challenger into job.out, score it and the champion on the same held-out pairs.

    With job.minutes the whole job keeps to them, counted from began (a time.monotonic(); default: now):
    the champion is scored first, and what its calibration and full-size scores took is what the
    challenger's will take, so the training loop stops that long (and a contact sheet's worth) before
    the end. Without a champion, those are timed on a few held-out pairs first.
    Returns what result.json holds. Raises unet.train.TrainingError when the data cannot train.
    """
    import torch

    from unet import save_model
    from unet.data import find_pairs, fingerprint, split
    from unet.train import TrainConfig, TrainingError, train

    began = time.monotonic() if began is None else began
    if job.threads:
        torch.set_num_threads(job.threads)
    started, t0 = now_iso(), time.monotonic()
    colorize = job.task == "colorize"
    pairs = find_pairs([Path(p) for p in job.pairs], allow_lone_color=colorize, swap=job.swap)
    train_pairs, val_pairs = split(pairs, job.val_percent)
    if not pairs:
        where = ", ".join(job.pairs) or "the queue's pairs folder (none filed yet)"
        raise TrainingError(f"no training pairs in {where}: drop NAME_before + NAME_after "
                            f"pairs (or color photos, for colorize) into the queue's train inbox")
    if not val_pairs or not train_pairs:
        raise TrainingError(f"{len(pairs)} pairs are too few: {job.val_percent:g}% are held out by name to score "
                            f"the models, and this leaves {len(train_pairs)} to train and {len(val_pairs)} to "
                            f"score; " + ("raise --val-percent (or [retrain] val_percent, up to 50) or add pairs"
                                          if not val_pairs else "lower --val-percent (or [retrain] val_percent) "
                                          "or add pairs"))
    log(f"{len(pairs)} pairs: {len(train_pairs)} to train, {len(val_pairs)} held out")
    torch.manual_seed(job.seed)  # a new network's first weights come from the seed too
    challenger = _starting_model(job, log, gray_output=_gray_afters(train_pairs))

    champion, champion_metrics, served, tint, after, loaded = None, None, None, None, None, None
    if job.start:
        champion, served, champion_metrics, tint, after, loaded = _score_champion(job, train_pairs, val_pairs, log)
    elif job.minutes is not None:
        after = _time_scoring(challenger, job, train_pairs, val_pairs)
    budget = None
    if job.minutes is not None:
        # After the loop: the challenger's calibration and scores (as long as the champion's took), its
        # contact sheet (two predictions a pair) and saving it and the report.
        after_s = after * (1 + 2 * min(SHEET_PAIRS, len(val_pairs)) / len(val_pairs)) + AFTER_MARGIN_S
        budget = {"minutes": job.minutes, "before_s": round(time.monotonic() - began, 1),
                  "timed_after_s": round(after, 1), "kept_after_s": round(after_s, 1)}
        log(f"budget {job.minutes:g} min in all: {budget['before_s']:.0f} s gone (loading"
            f"{', scoring the champion' if job.start else ''}), {after_s:.0f} s kept for calibrating and scoring "
            f"the challenger after training (timed {'on the champion' if job.start else 'on a few pairs'})")
        left = 60 * job.minutes - budget["before_s"] - after_s
        if left < 0.1 * 60 * job.minutes:
            log(f"{job.minutes:g} min leave only {max(0, left):.0f} s to train: loading and scoring take the "
                f"rest; give more minutes (--minutes, [retrain] max_minutes) or hold out fewer pairs")
    result = train(challenger, train_pairs, val_pairs,
                   TrainConfig(minutes=job.minutes, epochs=job.epochs, threads=job.threads, seed=job.seed),
                   log=log, progress=progress, should_stop=should_stop,
                   ends_by=None if budget is None else began + 60 * job.minutes - budget["kept_after_s"],
                   loaded=loaded)
    metrics = result.metrics
    tint = metrics.train_mean_chroma or tint

    challenger.meta = {}
    record = {"queue": job.queue, "parent": job.parent, "data_fingerprint": fingerprint(pairs),
              "pairs": len(pairs), "train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
              "metrics": metrics.as_dict(), "champion_metrics": champion_metrics and champion_metrics.as_dict(),
              "champion_served_metrics": served and served.as_dict(), "stopped": result.stopped,
              "trained_from": job.start, "started": started, "finished": now_iso(),
              "train_seconds": round(time.monotonic() - t0, 1)}
    if tint is not None:
        record["train_mean_chroma"] = list(tint)
    save_model(challenger, job.out, **record)
    sheet = _contact_sheet(Path(job.report) / SHEET, val_pairs[:SHEET_PAIRS], champion, challenger, job.task)
    phases = {**(budget or {}), **result.seconds, "in_all_s": round(time.monotonic() - began, 1)}
    log("took " + ", ".join(f"{k.replace('_', ' ')} {v:g} s" for k, v in result.seconds.items())
        + f"; {phases['in_all_s']:.0f} s in all" + (f" of {job.minutes:g} min" if job.minutes else ""))
    return {**record, "history": result.history, "model": job.out, "sheet": sheet,
            "val_names": [p.name for p in val_pairs], "budget": phases}


def _score_champion(job: TrainJob, train_pairs, val_pairs, log):
    """The champion on the held-out pairs, as served and (colorize) calibrated as the challenger will be.

    Returns (champion, served scores, scores to compare, train_mean_chroma, seconds its calibration and
    full-size scoring took: what the challenger's will take after training, the pairs as loaded or None).
    """
    from unet import load_model
    from unet.scores import evaluate
    from unet.train import TrainConfig, train

    champion, tint, after = load_model(job.start), None, None
    metrics, loaded = None, None
    if job.task == "colorize":
        # Weights against weights: the challenger's decoding is calibrated on these pairs, to a
        # colorfulness goal; the champion's was calibrated on other pairs once and may sit at another
        # point of the PSNR/colorfulness trade-off (paler scores higher). Calibrate a copy of it here
        # the same way (no training), and compare those scores.
        again = train(load_model(job.start), train_pairs, val_pairs, TrainConfig(epochs=0, threads=job.threads),
                      log=lambda m: None, progress=False)
        metrics, tint, loaded = again.metrics, again.metrics.train_mean_chroma, again.loaded
        after = again.seconds["calibration"] + again.seconds["scoring"]
    t = time.monotonic()
    served = evaluate(champion, val_pairs, mean_chroma=tint)
    after = after if after is not None else time.monotonic() - t
    log("champion as served, on the held-out pairs: " + served.described())
    if metrics is not None:
        knobs = again.model.task_cfg
        log(f"champion calibrated like the challenger (gain {knobs.gain:g}, tint gain "
            f"{knobs.gain if knobs.tint_gain is None else knobs.tint_gain:g}): " + metrics.described())
    return champion, served, metrics or served, tint, after, loaded


def _time_scoring(challenger, job: TrainJob, train_pairs, val_pairs) -> float:
    """Seconds the calibration and full-size scores after training will take, timed on a few pairs."""
    import copy

    from unet.train import TrainConfig, train

    k = min(SAMPLE_PAIRS, len(val_pairs))
    sample = train(copy.deepcopy(challenger), train_pairs[:k], val_pairs[:k], TrainConfig(epochs=0, threads=job.threads),
                   log=lambda m: None, progress=False)
    return (sample.seconds["calibration"] + sample.seconds["scoring"]) * len(val_pairs) / k


def _gray_afters(pairs) -> bool:
    """Whether the pairs' after images are black-and-white (a translate model then outputs one channel)."""
    from PIL import Image

    from unet.deepread import tiff_alone_header

    for p in pairs[:5]:
        try:
            with Image.open(p.after) as im:
                mode = im.mode
        except OSError:   # a TIFF Pillow cannot open is read by tifffile (unet.deepread)
            header = tiff_alone_header(p.after)
            mode = header[2] if header else "RGB"
        if mode not in ("L", "LA", "1", "I", "I;16", "F"):
            return False
    return bool(pairs)


def _contact_sheet(folder: Path, pairs, champion, challenger, task: str) -> list[dict]:
    """Save before / champion / challenger / truth thumbnails for a few held-out pairs."""
    from PIL import Image

    from unet import Predictor
    from unet.data import load_pair

    folder.mkdir(parents=True, exist_ok=True)
    models = {"champion": champion, "challenger": challenger}
    predictors = {k: Predictor(m, device="cpu", max_batch=1) for k, m in models.items() if m is not None}
    rows = []
    for p in pairs:
        before, after = load_pair(p)
        truth = after if task == "colorize" or challenger.task.cfg.out_channels == 3 else after.convert("L")
        images = {"before": before, "truth": truth}
        for k, pred in predictors.items():
            images[k] = pred.predict([before])[0]
        row = {"name": p.name}
        for k in ("before", "champion", "challenger", "truth"):
            im = images.get(k)
            im = Image.new("RGB", before.size, (235, 235, 235)) if im is None else im.convert("RGB")
            im = im.resize((max(1, round(im.width * THUMB / im.height)), THUMB), Image.Resampling.LANCZOS)
            path = folder / f"{len(rows):02d}_{k}.png"
            im.save(path)
            row[k] = path.name
        rows.append(row)
    return rows


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this child when the service dies: no orphan trains on."""
    parent = int(os.environ.get(PARENT_ENV, "0"))
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: lower priority, train, write result.json; exit 65 on bad data."""
    began = time.monotonic()  # the job's minutes count from here
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    job = TrainJob.load(Path(argv[0]))
    if job.nice:
        os.nice(job.nice)
    stop = {"asked": False}

    def on_term(signum, frame):  # the parent's deadline or the service stopping: keep the best so far
        stop["asked"] = True

    signal.signal(signal.SIGTERM, on_term)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    log(f"training child for queue {job.queue!r}: pid {os.getpid()}, threads {job.threads}, nice {job.nice}")
    from unet.train import TrainingError

    result_path = Path(job.report) / RESULT
    try:
        result = train_challenger(job, log=log, progress=False, should_stop=lambda: stop["asked"], began=began)
    except TrainingError as e:
        log(f"training failed: {e}")
        write_json(result_path, {"error": str(e)})
        return 65
    except Exception as e:  # noqa: BLE001 - the parent records it; the service carries on
        traceback.print_exc()
        write_json(result_path, {"error": f"{type(e).__name__}: {e}"})
        return 70
    write_json(result_path, result)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
