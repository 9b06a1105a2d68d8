"""Shared fixtures: tiny models, the child-process environment, the --soak switch (helpers: tests/support/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import child_env


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="run the long reliability tier")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long tier: run with make soak (pytest --soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture
def service_env():
    return child_env()
