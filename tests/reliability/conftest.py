"""The reliability table: each scenario's test adds a row (files or rounds, lost, processed twice,
peak RSS), and the session prints the table at its end and keeps a copy in pytest's cache folder
(.pytest_cache/d/reliability/table.md), the same table docs/reliability.md shows."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.processes import child_env

ROWS: list[dict] = []
HEADER = ("| scenario | files or rounds | lost | processed twice | peak RSS of the service | time |\n"
          "| --- | --- | --- | --- | --- | --- |")


@pytest.fixture
def record():
    """record(scenario, size, lost, twice, peak_kb, seconds): one row of the table."""
    def add(scenario: str, size: str, lost: int, twice: int, peak_kb: int, seconds: float) -> None:
        ROWS.append({"scenario": scenario, "size": size, "lost": lost, "twice": twice,
                     "peak": f"{peak_kb / 1024:.0f} MB" if peak_kb else "-", "seconds": seconds})
    return add


@pytest.fixture(scope="module")
def module_env():
    """As the service_env fixture, for a service shared by a module's tests."""
    return child_env()


def table() -> str:
    lines = [HEADER]
    for r in ROWS:
        lines.append(f"| {r['scenario']} | {r['size']} | {r['lost']} | {r['twice']} | {r['peak']} | "
                     f"{r['seconds']:.0f} s |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ROWS:
        return
    text = table()
    terminalreporter.write_sep("=", "reliability")
    terminalreporter.write_line(text)
    try:
        folder = config.cache.mkdir("reliability")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        (folder / "table.md").write_text(f"<!-- {stamp}, {os.cpu_count()} CPU(s) -->\n{text}\n")
    except (OSError, AttributeError):
        pass
