"""status.json and `reverser status`: counts, rates, and telling a running service from a stopped one."""

from __future__ import annotations

import json
import os
import time

from daemon.commands.cli import main as cli
from daemon.ops.status import NOT_RUNNING, STATUS_FILE, StatusBoard
from tests.support.config import write_config


def board_with_work() -> StatusBoard:
    b = StatusBoard(["colorize", "reverse"], "cpu")
    b.set_model("colorize", "models/colorize", 3, 4, "configured")
    for ok in (True, True, True, False):
        b.record("colorize", ok)
    b.state = "running"
    return b


def test_the_status_file_has_counts_rates_models_and_who_wrote_it(tmp_path):
    b = board_with_work()
    b.write(tmp_path, {"colorize": 7}, {"colorize": 2}, 2.0, {"colorize": {"pairs": {"pairs": 12, "new": 5}}})
    doc = json.loads((tmp_path / STATUS_FILE).read_text())
    c = doc["queues"]["colorize"]
    assert (c["waiting"], c["working"], c["processed"], c["failed"]) == (7, 2, 3, 1)
    assert c["per_minute"] > 0 and c["model"] == {"path": "models/colorize", "version": 3} and c["max_batch"] == 4
    assert c["pairs"] == {"pairs": 12, "new": 5} and doc["queues"]["reverse"]["processed"] == 0
    assert doc["pid"] == os.getpid() and doc["state"] == "running" and doc["uptime_seconds"] >= 0
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temporary file left behind


def test_status_without_a_service_says_so_and_how_to_start_one(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path, tiny_models)
    assert cli(["status", "--config", str(cfg)]) == NOT_RUNNING
    err = capsys.readouterr().err
    assert "not running" in err and "reverser run" in err


def _write(cfg_path, doc_changes):
    b = board_with_work()
    state = cfg_path.parent / "var"
    b.write(state, {"colorize": 1}, {}, 2.0, {"colorize": {"pairs": {"pairs": 9, "new": 2}}})
    doc = json.loads((state / STATUS_FILE).read_text())
    doc.update(doc_changes)
    (state / STATUS_FILE).write_text(json.dumps(doc))


def test_status_prints_a_table_for_a_running_service(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path, tiny_models)
    _write(cfg, {})
    assert cli(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"reverser: running, pid {os.getpid()}")
    row = next(line for line in out.splitlines() if line.strip().startswith("colorize"))
    assert row.split()[1:5] == ["1", "0", "3", "1"] and "9 (2)" in row and "v3" in row
    assert cli(["status", "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queues"]["colorize"]["processed"] == 3


def test_status_tells_stopped_gone_and_stuck_services_apart(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path, tiny_models)
    for changes, expect in (({"state": "stopped"}, "stopped cleanly"),
                            ({"pid": 2 ** 22 + 12345}, "is gone"),
                            ({"updated_unix": time.time() - 3600}, "stale: no update for")):
        _write(cfg, changes)
        assert cli(["status", "--config", str(cfg)]) == NOT_RUNNING
        assert expect in capsys.readouterr().out
