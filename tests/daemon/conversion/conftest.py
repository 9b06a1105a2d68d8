"""What the claim tests share: a one-queue config on tmp_path and an owner of its work/ folder."""

from __future__ import annotations

import pytest

from daemon.conversion.claims.owners import Owner
from daemon.core.config import parse_config


@pytest.fixture
def cfg(tmp_path):
    return parse_config({"queues": {"colorize": {"task": "colorize", "model": "m"}}}, base=tmp_path)


@pytest.fixture
def owner(cfg):
    o = Owner(cfg.state_dir("work"))
    yield o
    o.close()
