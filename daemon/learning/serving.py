"""Which model folder serves a queue: the registry's champion, else the shipped model; and loading them.

When the champion does not load (a file damaged on disk, or swapped in by hand
behind the registry's back), the service falls back to the newest earlier
champion that does, then to the configured model, and says so loudly: a
broken model file must not take the whole service down.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from ..core.config import Config, ConfigError
from .registry import CHAMPION, RETIRED, Registry, RegistryError, open_registry


def model_dir(cfg: Config, queue: str) -> Path:
    """The champion's folder when the queue has a registry, else the configured (shipped) model."""
    reg = Registry(cfg.state_dir("models", queue))
    champion = reg.champion_dir()
    return champion if champion is not None else cfg.queues[queue].model


def candidates(cfg: Config, queue: str) -> list[Path]:
    """Folders that may serve the queue, best first: the champion, earlier champions newest first, the configured model."""
    reg = Registry(cfg.state_dir("models", queue))
    champion = reg.champion_dir()
    found = [champion] if champion is not None else []
    found += [v.path for v in reversed(reg.versions()) if v.status in (RETIRED, CHAMPION) and v.path != champion]
    found.append(cfg.queues[queue].model)
    return found


def task_mismatch(folder, have: str, want: str) -> str:
    return f"{folder} is a {have!r} model, the queue's task is {want!r}"


def load_predictor(cfg: Config, folder: Path, task: str | None = None):
    """A Predictor for the model in folder on the configured device; CheckpointError when it is not of task."""
    from unet import Predictor
    from unet.checkpoint import CheckpointError

    p = Predictor(folder, device=cfg.runtime.device, max_batch=1)
    if task is not None and p.task.name != task:
        raise CheckpointError(task_mismatch(folder, p.task.name, task))
    return p


def load_serving(cfg: Config) -> dict:
    """Every queue's serving model as a Predictor on the configured device; a ConfigError naming the queue
    if none loads.

    A champion that does not load gives way to the newest earlier champion
    that does (then the configured model), with an error in the log.
    """
    from unet.checkpoint import CheckpointError

    out = {}
    for q in cfg.queues:
        try:
            open_registry(cfg, q)  # the shipped model becomes version 1 of an empty registry
        except (RegistryError, CheckpointError) as e:
            raise ConfigError(cfg.file, f"[queues.{q}]", f"the model registry is unusable: {e}") from None
        broken = []
        for folder in candidates(cfg, q):
            try:
                out[q] = load_predictor(cfg, folder, cfg.queues[q].task)
                break
            except CheckpointError as e:
                broken.append(e)
            except (ValueError, RuntimeError) as e:  # the device: CUDA absent, no such GPU, CUDA broken
                raise ConfigError(cfg.file, "[runtime] device", f"cannot use it: {e}") from None
        else:
            raise ConfigError(cfg.file, f"[queues.{q}] model", f"cannot load the model: {broken[0]}",
                              "point model at a model folder (model.safetensors, config.json, meta.json); "
                              "`reverser check` tests every model")
        if broken:
            logger.error("queue {}: {}; serving version {} from {} instead. Replace the broken model, or pick "
                         "one with `reverser models --queue {} list` and `promote VERSION`",
                         q, "; ".join(map(str, broken)), out[q].version, out[q].model.path, q)
    return out
