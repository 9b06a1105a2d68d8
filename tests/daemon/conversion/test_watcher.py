"""The watcher on real folders with the real watchdog observers: complete files only, each once."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from daemon.conversion.watching.watcher import Watcher
from daemon.core.names import is_partial
from tests.support.service import captured_logs, wait_for


def is_before(name: str) -> bool:
    return name.endswith("_before.jpg")


class Recorder:
    """A handler that records arrivals (with the file's size then) and, like the service, moves files away."""

    def __init__(self, taken: Path | None):
        self.arrivals = []
        self.taken = taken
        self.lock = threading.Lock()

    def __call__(self, arrival):
        try:
            size = os.lstat(arrival.path).st_size
        except FileNotFoundError:
            size = None
        with self.lock:
            self.arrivals.append((arrival.path.name, arrival.how, size, time.monotonic()))
        if self.taken is not None:
            self.taken.mkdir(exist_ok=True)
            os.rename(arrival.path, self.taken / f"{len(self.arrivals)}-{arrival.path.name}")

    def names(self):
        with self.lock:
            return [a[0] for a in self.arrivals]


@pytest.fixture
def watch(tmp_path):
    """Start a Watcher on tmp_path/in with a Recorder; stopped at the end."""
    started = []

    def start(accept=is_before, take=True, **kw):
        folder = tmp_path / "in"
        rec = Recorder(tmp_path / "taken" if take else None)
        kw.setdefault("settle", 0.2)
        kw.setdefault("rescan", 0.3)
        w = Watcher({folder: rec}, accept, **kw)
        w.start()
        started.append(w)
        return w, rec, folder

    yield start
    for w in started:
        w.stop()


def test_partial_names_are_recognised():
    for name in (".x_before.jpg", "x_before.jpg.part", "x_before.jpg.tmp", "x_before.jpg.crdownload",
                 "x_before.jpg.partial", "x_before.jpg~", "X_BEFORE.JPG.PART"):
        assert is_partial(name), name
    assert not is_partial("x_before.jpg")


def test_a_written_and_closed_file_is_handed_on_once(watch):
    w, rec, folder = watch(settle=30.0)  # a long settle: only the close event can make it complete
    assert w.close_events, "inotify with close events is expected on Linux"
    (folder / "a_before.jpg").write_bytes(b"x" * 1000)
    wait_for(lambda: rec.names() == ["a_before.jpg"], 10, "the closed file")
    assert rec.arrivals[0][1] == "closed" and rec.arrivals[0][2] == 1000
    w.rescan_now()
    time.sleep(0.5)
    assert rec.names() == ["a_before.jpg"]


def test_a_slow_writer_is_not_taken_while_partial(watch):
    w, rec, folder = watch(settle=0.2, rescan=30.0)
    chunks = 5
    with open(folder / "slow_before.jpg", "wb") as f:
        for _ in range(chunks):
            f.write(b"y" * 4096)
            f.flush()
            time.sleep(0.4)  # longer than the settle time: size and mtime alone would call it complete
            assert rec.names() == [], "taken while the writer still had it open"
    wait_for(lambda: rec.names() == ["slow_before.jpg"], 10, "the finished file")
    assert rec.arrivals[0][2] == chunks * 4096


def test_a_file_renamed_in_is_taken_at_once(watch, tmp_path):
    w, rec, folder = watch(settle=30.0)
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "moved_before.jpg").write_bytes(b"m" * 10)
    os.rename(stage / "moved_before.jpg", folder / "moved_before.jpg")
    (folder / "inner_before.jpg.part").write_bytes(b"p" * 10)  # the usual delivery: write .part, rename
    os.rename(folder / "inner_before.jpg.part", folder / "inner_before.jpg")
    wait_for(lambda: sorted(rec.names()) == ["inner_before.jpg", "moved_before.jpg"], 10, "both renamed files")
    assert {a[1] for a in rec.arrivals} <= {"renamed", "closed"}


def test_partial_names_are_never_taken_and_other_names_are_logged_once(watch):
    with captured_logs("INFO") as lines:
        w, rec, folder = watch(subfolders={"train"})
        partial = [".hidden_before.jpg", "a_before.jpg.part", "b_before.jpg.tmp", "c_before.jpg.crdownload",
                   "d_before.jpg.partial", "e_before.jpg~"]
        for name in partial + ["notes.txt"]:
            (folder / name).write_bytes(b"z")
        (folder / "train").mkdir()  # a sub-folder that belongs there (the pairs inbox) is not worth a line
        (folder / "scans").mkdir()  # another one is: its files are not taken
        (folder / "scans" / "x_before.jpg").write_bytes(b"z")
        time.sleep(1.2)  # several rescans
        (folder / "last_before.jpg").write_bytes(b"z")
        wait_for(lambda: "last_before.jpg" in rec.names(), 10, "the good file")
    assert rec.names() == ["last_before.jpg"]
    assert all((folder / n).exists() for n in partial + ["notes.txt"])  # all left alone
    assert sum("notes.txt" in line for line in lines) == 1, lines
    assert not any(".part" in line or "hidden" in line or "train" in line for line in lines), lines
    [scans] = [line for line in lines if "scans" in line]
    assert "a folder" in scans and "move its files up" in scans


def test_the_polling_observer_waits_for_size_and_mtime_to_settle(watch):
    w, rec, folder = watch(observer="polling", poll=0.1, settle=0.5, rescan=30.0)
    assert not w.close_events
    path = folder / "grow_before.jpg"
    for i in range(6):
        with open(path, "ab") as f:  # a writer that closes after every chunk: no event says "done"
            f.write(b"g" * 1000)
        last_write = time.monotonic()
        time.sleep(0.2)
        assert rec.names() == [], f"taken while still growing (after chunk {i + 1})"
    wait_for(lambda: rec.names(), 10, "the settled file")
    _, how, size, at = rec.arrivals[0]
    assert how == "settled" and size == 6000 and at - last_write >= 0.5


def test_files_present_before_start_are_found_by_the_startup_scan(tmp_path, watch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"old{i}_before.jpg").write_bytes(b"o")
    w, rec, _ = watch(rescan=60.0)
    wait_for(lambda: len(rec.names()) == 3, 10, "the three old files")
    assert all(a[1] == "settled" for a in rec.arrivals)


def test_the_reconcile_scan_restarts_a_dead_observer(watch, tmp_path):
    w, rec, folder = watch(settle=0.1, rescan=0.3)
    w._observer.stop()  # the observer thread dies (as after an internal error)
    w._observer.join(5)
    wait_for(lambda: w.observer_alive, 10, "the observer to be restarted")
    # A watched folder deleted and made again: its watch is gone, the next scan restores it.
    shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)  # the next scan makes it again anyway
    time.sleep(0.5)
    wait_for(lambda: w.observer_alive, 10, "the observer to watch the new folder")
    (folder / "after_before.jpg").write_bytes(b"a")
    wait_for(lambda: rec.names() == ["after_before.jpg"], 10, "a file in the recreated folder")


def test_files_missed_by_events_are_found_by_the_reconcile_scan(watch):
    w, rec, folder = watch(settle=0.1, rescan=0.3)
    w._stop_observer()  # no events at all from here on; only scans can find files
    w._ensure_observer = lambda: None
    (folder / "missed_before.jpg").write_bytes(b"m")
    wait_for(lambda: rec.names() == ["missed_before.jpg"], 10, "the file found by a scan")


def test_a_slow_handler_does_not_hold_up_other_files(tmp_path):
    folder = tmp_path / "in"
    second = threading.Event()
    seen = []

    def handler(arrival):
        seen.append(arrival.path.name)
        if arrival.path.name == "first_before.jpg":
            assert second.wait(10), "the second file waited for the slow handler"
        else:
            second.set()
        arrival.path.unlink()

    w = Watcher({folder: handler}, is_before, settle=0.1, rescan=30.0, threads=2)
    w.start()
    try:
        (folder / "first_before.jpg").write_bytes(b"1")
        wait_for(lambda: seen, 10, "the first file")
        (folder / "second_before.jpg").write_bytes(b"2")
        wait_for(second.is_set, 10, "the second file while the first is still being handled")
    finally:
        w.stop()


def test_each_folder_has_its_own_handler_and_subfolders_are_not_watched(tmp_path):
    a, b = tmp_path / "inbox" / "a", tmp_path / "inbox" / "b"
    got = {"a": [], "b": []}
    w = Watcher({a: lambda ar: got["a"].append(ar.path.name), b: lambda ar: got["b"].append(ar.path.name)},
                lambda n: n.endswith(".png"), settle=0.1, rescan=0.3)
    w.start()
    try:
        (a / "train").mkdir()
        (a / "train" / "pair.png").write_bytes(b"t")
        (a / "one.png").write_bytes(b"1")
        (b / "two.png").write_bytes(b"2")
        wait_for(lambda: got["a"] and got["b"], 10, "a file in each folder")
        time.sleep(0.6)
    finally:
        w.stop()
    assert got["a"][0] == "one.png" and got["b"][0] == "two.png"
    assert "pair.png" not in got["a"] + got["b"]


def test_links_and_fifos_are_handed_on_at_once_and_folders_never(watch, tmp_path):
    w, rec, folder = watch(settle=30.0, take=False, rescan=0.3)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"s")
    os.symlink(outside, folder / "link_before.jpg")
    os.mkfifo(folder / "fifo_before.jpg")
    (folder / "dir_before.jpg").mkdir()
    wait_for(lambda: {"link_before.jpg", "fifo_before.jpg"} <= set(rec.names()), 10, "the link and the FIFO")
    assert {a[1] for a in rec.arrivals} == {"special"}
    assert "dir_before.jpg" not in rec.names()


def test_many_files_are_each_handed_on_exactly_once(watch):
    w, rec, folder = watch(settle=0.2, rescan=0.1)  # frequent scans race with events on purpose
    n = 300
    for i in range(n):
        (folder / f"f{i:03d}_before.jpg").write_bytes(b"f" * 100)
    wait_for(lambda: len(rec.names()) >= n, 30, f"{n} files")
    time.sleep(0.5)
    counts = Counter(rec.names())
    assert len(counts) == n and max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]


def test_an_inbox_folder_removed_and_made_again_is_watched_again_at_once(watch):
    # The full scan is 30 s away: only a re-armed watch can see the new file in time.
    w, rec, folder = watch(rescan=30.0)
    wait_for(lambda: w.observer_alive, 10, "the observer")
    (folder / "a_before.jpg").write_bytes(b"a")
    wait_for(lambda: rec.names() == ["a_before.jpg"], 10, "the first file")
    shutil.rmtree(folder)
    time.sleep(0.3)
    folder.mkdir()
    (folder / "b_before.jpg").write_bytes(b"b")
    wait_for(lambda: "b_before.jpg" in rec.names(), 5, "the file dropped into the folder made again")
    wait_for(lambda: w.observer_alive, 5, "the observer watching again")
    assert w.close_events, "still inotify, not the polling fallback"
    (folder / "c_before.jpg").write_bytes(b"c")
    wait_for(lambda: "c_before.jpg" in rec.names(), 5, "a file after that")
    assert [a[1] for a in rec.arrivals][-1] == "closed", "taken at its close event: the watch is armed again"


def test_a_backlog_is_handed_on_oldest_first(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    now = time.time()
    names = [f"f{i:02d}_before.jpg" for i in range(20)]
    order = names[::-1]   # the oldest is f19: neither the names' order nor (likely) the folder's
    for age, name in enumerate(order):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (now - 1000 + age, now - 1000 + age))
    rec = Recorder(tmp_path / "taken")
    w = Watcher({folder: rec}, is_before, settle=0.1, rescan=30.0, threads=1)
    w.start()
    try:
        wait_for(lambda: len(rec.names()) == 20, 10, "the backlog")
    finally:
        w.stop()
    assert rec.names() == order
