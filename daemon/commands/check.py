"""reverser check: validate the config, folders, device and every queue's model; exit 78 if bad."""

from __future__ import annotations

import sys

from ..core.config import ConfigError, load_config
from ..errors import EX_CONFIG, EX_OK
from ..preflight import check, describe


def main(args) -> int:
    """`reverser check`: print what is wrong and exit 78, or a short summary and exit 0."""
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"reverser check: {describe(e)}", file=sys.stderr)
        return EX_CONFIG
    problems, facts = check(cfg, models=True)
    if problems:
        for p in problems:
            print(f"reverser check: {describe(p)}", file=sys.stderr)
        print(f"reverser check: {len(problems)} problem(s) in {cfg.file}; the service would not start",
              file=sys.stderr)
        return EX_CONFIG
    print(f"{cfg.file}: OK")
    print(f"  device   {facts['device']}" + (" (auto)" if cfg.runtime.device == "auto" else ""))
    for key in ("inbox", "outbox", "state"):
        print(f"  {key:<8} {getattr(cfg.paths, key)}")
    for q, qc in cfg.queues.items():
        print(f"  queue    {q}: {qc.task}, model {facts['models'][q]}")
    r = cfg.retrain
    print(f"  retrain  {('cron ' + repr(r.cron)) if r.enabled else 'off'}")
    m, w = cfg.metrics, cfg.web
    print(f"  metrics  {f'http://{m.host}:{m.port}/metrics' if m.enabled else 'off'}")
    guard = "token set" if w.token else "no token: this machine only"
    print(f"  web      {f'http://{w.host}:{w.port}/ ({guard})' if w.enabled else 'off'}")
    if m.enabled:
        print(f"reverser check: note: [web] serves the same metrics at /metrics on its own port; [metrics] is kept "
              f"for scrapers that know port {m.port}. For one port (and one systemd drop-in, deploy/web.conf), "
              f"set [web] enabled = true, scrape http://{w.host}:{w.port}/metrics and remove [metrics].",
              file=sys.stderr)
    return EX_OK
