"""Which model folder serves a queue: the registry's champion, else the shipped model."""

from __future__ import annotations

from pathlib import Path

from .config import Config


def model_dir(cfg: Config, queue: str) -> Path:
    """The champion's folder when the queue has a registry, else the configured (shipped) model."""
    from .registry import Registry

    reg = Registry(cfg.state_dir("models", queue))
    champion = reg.champion_dir()
    return champion if champion is not None else cfg.queues[queue].model
