"""The memory the service may use: the machine's, a cgroup's limit (v1 and v2), the default budget, trim."""

from __future__ import annotations

import pytest

from daemon.core import memory
from daemon.core.config import ConfigError, parse_config


def cgroup_tree(tmp_path, version: int, limit: str):
    proc = tmp_path / "cgroup"
    root = tmp_path / "sys"
    if version == 2:
        proc.write_text("0::/system.slice/reverser.service\n")
        folder = root / "system.slice" / "reverser.service"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(limit + "\n")
    else:
        proc.write_text("5:cpu:/\n4:memory:/docker/abc\n0::/\n")
        folder = root / "memory" / "docker" / "abc"
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(limit + "\n")
    return proc, root


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_limit_is_read_for_v1_and_v2(tmp_path, version):
    proc, root = cgroup_tree(tmp_path, version, str(4 << 30))
    assert memory.cgroup_limit(proc, root) == 4 << 30


@pytest.mark.parametrize("version, text", [(2, "max"), (1, "9223372036854771712")])
def test_no_cgroup_limit_reads_as_none(tmp_path, version, text):
    assert memory.cgroup_limit(*cgroup_tree(tmp_path, version, text)) == 0


def test_the_default_budget_is_half_the_smaller_of_the_machine_and_the_cgroup(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 24 << 30)
    monkeypatch.setattr(memory, "cgroup_limit", lambda: 0)
    assert memory.budget("auto") == (12 << 30, "auto: half of this machine's 24.0 GiB")
    monkeypatch.setattr(memory, "cgroup_limit", lambda: 4 << 30)
    assert memory.budget("auto") == (2 << 30, "auto: half of the cgroup's limit of 4.0 GiB")
    assert memory.budget(4096) == (4 << 30, "configured")


def test_the_machine_has_memory_and_trimming_gives_it_back_where_glibc_runs():
    assert memory.machine_memory() > 0 and memory.rss() > 0
    assert memory.trim() in (True, False)


def test_the_budget_key_is_validated_with_a_suggestion(tmp_path):
    q = {"queues": {"colorize": {"task": "colorize", "model": "m"}}}
    assert parse_config({**q, "runtime": {"memory_budget_mb": 4096}}).runtime.memory_budget_mb == 4096
    assert parse_config(q).runtime.memory_budget_mb == "auto"
    with pytest.raises(ConfigError, match="did you mean 'memory_budget_mb'"):
        parse_config({**q, "runtime": {"memory_budget": 4096}})
    for bad in (10, "lots", 1.5):
        with pytest.raises(ConfigError, match="memory_budget_mb"):
            parse_config({**q, "runtime": {"memory_budget_mb": bad}})
