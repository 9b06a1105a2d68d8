"""Which model folder serves a queue: the registry's champion, else the shipped model.

When the champion does not load (a file damaged on disk, or swapped in by hand
behind the registry's back), the service falls back to the newest earlier
champion that does, then to the configured model, and says so loudly: a
broken model file must not take the whole service down.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config


def model_dir(cfg: Config, queue: str) -> Path:
    """The champion's folder when the queue has a registry, else the configured (shipped) model."""
    from .registry import Registry

    reg = Registry(cfg.state_dir("models", queue))
    champion = reg.champion_dir()
    return champion if champion is not None else cfg.queues[queue].model


def candidates(cfg: Config, queue: str) -> list[Path]:
    """Folders that may serve the queue, best first: the champion, earlier champions newest first, the configured model."""
    from .registry import CHAMPION, RETIRED, Registry

    reg = Registry(cfg.state_dir("models", queue))
    champion = reg.champion_dir()
    found = [champion] if champion is not None else []
    found += [v.path for v in reversed(reg.versions()) if v.status in (RETIRED, CHAMPION) and v.path != champion]
    found.append(cfg.queues[queue].model)
    return found
