"""The model registry: numbered versions per queue and a champion pointer (being built)."""

from __future__ import annotations

from pathlib import Path


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def champion_dir(self) -> Path | None:
        """The champion version's folder, or None when the registry is empty."""
        return None
