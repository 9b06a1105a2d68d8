"""A real `reverser run` child with [web] enabled on a free port, shared by a test module, and an httpx client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.config import merge_sections, write_config
from tests.support.processes import child_env
from tests.support.rig import QUICK
from tests.support.service import Service, wait_for
from tests.support.net import free_port

TOKEN = "s3cret-token-for-the-tests-0123"


@dataclass
class WebService:
    root: Path
    config: Path
    service: Service
    url: str

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def folder(self, kind: str, q: str = "colorize") -> Path:
        return {"inbox": self.root / "inbox" / q, "outbox": self.root / "outbox" / q,
                "failed": self.root / "outbox" / q / "failed", "done": self.root / "var" / "done" / q}[kind]

    def wait_state(self, client: httpx.Client, fid: str, *states: str) -> dict:
        def state():
            doc = client.get(f"/api/files/{fid}").json()
            return doc if doc.get("state") in states else None
        return wait_for(state, 60, f"file {fid} to be {' or '.join(states)}", every=0.1, log=self.service.log)


def start_web(root: Path, models: dict, extra: str = "") -> WebService:
    port = free_port()
    text = merge_sections(QUICK, f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n' + extra)
    config = write_config(root, models, text)
    service = Service(config, child_env(), root / "service.log").wait_ready(180)
    return WebService(root, config, service, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def web(tmp_path_factory, tiny_models):
    """A service without a token (the loopback default)."""
    w = start_web(tmp_path_factory.mktemp("web"), {"colorize": tiny_models["colorize"]},
                  "[limits]\nmax_file_mb = 2\nmax_pixels = 4000000\n")
    yield w
    w.service.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_models):
    """A service with [web] token set."""
    w = start_web(tmp_path_factory.mktemp("guarded"), {"colorize": tiny_models["colorize"]}, f'token = "{TOKEN}"\n')
    yield w
    w.service.stop()
