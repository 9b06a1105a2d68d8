"""Shared fixtures: tiny models, generated images, configs on temporary folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PLATES = ROOT.parent / "shared" / "data" / "plates"


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="run the long reliability tier")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long tier: run with make soak (pytest --soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


def make_image(path: Path, size=(96, 64), mode="RGB", seed=0, **save) -> Path:
    """A smooth, colorful test picture (gradients and a disc) of any size and mode, saved to path."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(xx / max(w, 1) * 3 + rng.uniform(0, 3))
    g = 127 + 120 * np.cos(yy / max(h, 1) * 2 + rng.uniform(0, 3))
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2
    b = np.where(disc, 220.0, 40.0)
    rgb = Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")
    im = rgb if mode == "RGB" else rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **save)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Untrained but valid model folders, small enough to run in milliseconds: colorize and translate."""
    from unet import TaskConfig, UNetConfig, new_model, save_model

    root = tmp_path_factory.mktemp("models")
    small = UNetConfig(widths=(8, 16, 32), middle_blocks=1)
    out = {}
    for name, task in (("colorize", TaskConfig("colorize", work_long=64, bins_per_axis=8)),
                       ("reverse", TaskConfig("translate", work_long=64, out_channels=1))):
        import torch

        torch.manual_seed(0)
        out[name] = save_model(new_model(task, small), root / name, version=1)
    return out


def write_config(folder: Path, models: dict[str, Path], text: str = "") -> Path:
    """A config.toml in folder with its own inbox/outbox/state, the given models as queues, plus text."""
    folder.mkdir(parents=True, exist_ok=True)
    queues = "".join(
        f'\n[queues.{q}]\ntask = "{"colorize" if q == "colorize" else "translate"}"\nmodel = "{m}"\n'
        for q, m in models.items())
    base = ('[runtime]\ndevice = "cpu"\nmax_batch = 4\ntorch_threads = 1\n'
            '[watch]\nsettle_seconds = 0.3\nrescan_seconds = 2\n'
            '[retrain]\nenabled = false\n')
    path = folder / "config.toml"
    path.write_text(_merge_sections(base, text) + queues)
    return path


def _merge_sections(base: str, extra: str) -> str:
    """TOML forbids a section twice: keys in extra's sections replace or join base's."""
    import tomllib

    merged = tomllib.loads(base)
    for sec, kv in tomllib.loads(extra).items():
        merged.setdefault(sec, {}).update(kv)
    lines = []
    for sec, kv in merged.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def child_env() -> dict:
    """Environment for a child `python -m daemon`: this checkout on the path, unbuffered, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    return env


@pytest.fixture
def service_env():
    return child_env()


PYTHON = sys.executable
