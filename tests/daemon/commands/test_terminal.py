"""What a terminal shows: whole log lines above one progress bar, never a line cut into by a bar."""

from __future__ import annotations

import re
import textwrap

from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.pairs import tiny_champion, write_pairs
from tests.support.processes import PYTHON, ROOT, child_env
from tests.support.terminal import run_on_terminal, screen

# The service's format (daemon/ops/logs.py HUMAN), from the start of a line to its end.
SERVICE_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR) +\S")
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _is_bar(line: str) -> bool:
    return bool(re.search(r"\d+%\|", line))


def _check_whole_lines(lines: list[str]) -> list[str]:
    """The screen's log lines, each checked to be one whole line: no bar before it, none inside it."""
    logged = [line for line in lines if STAMP.search(line)]
    for line in logged:
        assert SERVICE_LINE.match(line), f"not a whole log line in the service's format: {line!r}"
        assert not _is_bar(line) and "\r" not in line, f"a bar fragment in a log line: {line!r}"
    return logged


def test_train_logs_in_the_service_format_above_one_bar(tmp_path):
    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    config = write_config(tmp_path, {"colorize": shipped}, "[retrain]\nmin_holdout_pairs = 5\n")
    pairs = write_pairs(tmp_path / "plates", 40)
    code, raw = run_on_terminal([PYTHON, "-m", "daemon", "train", "--config", str(config), "--queue", "colorize",
                                 "--pairs", str(pairs), "--epochs", "3", "--val-percent", "30"], child_env())
    lines = screen(raw)
    assert code == 0, "\n".join(lines)
    assert "it/s" in raw or "%|" in raw, "a terminal gets a progress bar"
    logged = _check_whole_lines(lines)
    said = "\n".join(logged)
    # Lines written while the bar was drawn (the starting score, each evaluation) and after it.
    for what in ("start: val loss", "epoch 3 step", "champion as served", "retrain colorize: version 2"):
        assert what in said, f"{what!r} not logged as a whole line:\n" + "\n".join(lines)
    assert " | " not in said and "daemon.commands.train:" not in said, "loguru's default format, not the service's"
    bars = [line for line in lines if _is_bar(line)]
    assert len(bars) == 1 and bars[0].lstrip().startswith("100%"), bars   # one bar, finished, below the lines
    assert lines.index(bars[0]) > lines.index(next(line for line in logged if "epoch 3 step" in line))


def test_convert_writes_its_failures_above_the_bar(tmp_path, tiny_models):
    config = write_config(tmp_path / "cfg", tiny_models)
    folder = tmp_path / "photos"
    for i in range(12):
        make_image(folder / f"p{i:02d}_before.jpg", (64, 48), "L", seed=i)
    for i in range(3):
        (folder / f"broken{i}_before.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    code, raw = run_on_terminal([PYTHON, "-m", "daemon", "convert", "--config", str(config), str(folder)],
                                child_env())
    lines = screen(raw)
    assert code == 65, "\n".join(lines)
    failed = [line for line in lines if ": failed:" in line]
    assert len(failed) == 3 and all(line.startswith(str(folder)) and not _is_bar(line) for line in failed), lines
    bars = [line for line in lines if _is_bar(line)]
    assert len(bars) == 1 and "15/15" in bars[0], bars
    assert lines[-1] == "converted 12 of 15 file(s); 3 failed"


def test_log_lines_from_threads_are_written_above_a_bar(tmp_path):
    # What convert's pipeline threads log (a batch split, a file vanished) while its bar runs, through the
    # same set-up: 4 threads log 25 warnings each while the bar moves 200 times.
    script = textwrap.dedent("""
        import sys, threading, time
        from loguru import logger
        from tqdm import tqdm
        from daemon.core.config import LoggingConfig
        from daemon.ops.logs import setup_logging

        setup_logging(LoggingConfig(level="INFO", json=False, file=None), bars=True)
        bar = tqdm(total=200, unit="img")

        def talk(k):
            for i in range(25):
                logger.warning("worker {} says {}: a whole line", k, i)
                time.sleep(0.002)

        threads = [threading.Thread(target=talk, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for _ in range(200):
            bar.update()
            time.sleep(0.001)
        for t in threads:
            t.join()
        bar.close()
    """)
    code, raw = run_on_terminal([PYTHON, "-c", script], {**child_env(), "PYTHONPATH": str(ROOT)})
    lines = screen(raw)
    assert code == 0, "\n".join(lines)
    logged = _check_whole_lines(lines)
    assert len(logged) == 100 and all(line.endswith(": a whole line") for line in logged), lines
    assert [line for line in lines if _is_bar(line)] == [lines[-1]] and "200/200" in lines[-1]
