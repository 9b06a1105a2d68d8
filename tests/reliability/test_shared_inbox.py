"""Several hosts, one shared inbox, local state: two services whose state folders are on another filesystem
than the inbox and outbox they share, through a flood with a reload and a kill -9 of each."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

from tests.support.accounting import input_of
from tests.support.checker import OutboxChecker
from tests.support.filesystems import other_filesystem
from tests.support.pictures import picture_pool
from tests.support.rig import Rig, poll
from tests.support.service import names
from tests.support.writers import Flood

FALLBACK = ".reverser-work"


def settled(rigs: list[Rig]) -> int:
    """Inputs done by either service, or quarantined (the outbox, and so failed/, is shared)."""
    return sum(len(names(r.done())) for r in rigs) + sum(
        1 for n in names(rigs[0].failed()) if not n.endswith(".reason.txt"))


def leftovers(share_inbox: Path, rigs: list[Rig]) -> list[str]:
    """Anything still waiting or claimed, and lock files or temporary files left behind."""
    left = [n for n in names(share_inbox) if not n.startswith(".")]
    work = share_inbox / FALLBACK
    for dirpath, _, filenames in os.walk(work):
        left += [os.path.relpath(os.path.join(dirpath, n), work) for n in filenames]
    for r in rigs:
        left += names(r.work()) + names(r.cfg.state_dir("work") / ".owners")
    left += [n for n in names(rigs[0].outbox()) if n.startswith(".")]
    return left


def test_two_hosts_sharing_an_inbox_with_local_state_convert_each_file_once(tmp_path, tiny_models, service_env,
                                                                           record):
    share = other_filesystem(tmp_path) / f"reverser-shared-{os.getpid()}-{time.monotonic_ns()}"
    inbox, outbox = share / "inbox", share / "outbox"
    text = (f'[paths]\ninbox = "{inbox}"\noutbox = "{outbox}"\n'
            "[runtime]\nmax_batch = 4\nqueue_size = 16\n[watch]\nsettle_seconds = 1.0\n")
    a = Rig(tmp_path / "a", {"colorize": tiny_models["colorize"]}, service_env, text)
    b = Rig(tmp_path / "b", {"colorize": tiny_models["colorize"]}, service_env, text)
    rigs = [a, b]
    share.mkdir()
    assert os.stat(a.cfg.paths.state.parent).st_dev != os.stat(share).st_dev
    n, waves = 300, 5
    flood = Flood(a.inbox(), picture_pool(tmp_path / "pool"), tmp_path / "pool-files", share / "stage",
                  chunk_pause=0.3)
    t0 = time.monotonic()
    events = []

    def wave(k: int) -> None:
        flood.start(n // waves, chunked=2, pace=0.03, first=k * (n // waves))
        sizes.update({name.rsplit("_before", 1)[0]: pic.size for name, pic in flood.delivered.items()})

    def part_way(k: int, share_of_wave: float = 0.3) -> None:
        target = int((k + share_of_wave) * (n // waves))
        poll(lambda: settled(rigs) >= target, 120, f"{target} settled", a, every=0.005)

    try:
        sizes: dict[str, tuple[int, int]] = {}
        with OutboxChecker(outbox / "colorize", sizes) as checker:
            a.start()
            # 1: B starts while A has files in flight in the shared work folder.
            wave(0)
            part_way(0)
            in_flight = len([e for e in names(inbox / "colorize" / FALLBACK)])
            b.start()
            events.append(f"B started with {in_flight} of A's files in the shared work folder")
            # 2: a reload of each during the flood.
            wave(1)
            part_way(1)
            for r in rigs:
                r.current.send(signal.SIGHUP)
            for r in rigs:
                r.current.wait_log("Reloaded", 60)
            # 3 and 4: each killed with -9 in the middle of a wave, and started again.
            for k, r in ((2, a), (3, b)):
                wave(k)
                part_way(k, 0.4)
                r.kill9()
                events.append(f"killed {'AB'[rigs.index(r)]} with "
                              f"{len(names(inbox / 'colorize' / FALLBACK))} claimed file(s) in the work folder")
                r.start()
            wave(4)
            flood.wait(300)
            poll(lambda: settled(rigs) >= n, 180, f"all {n} inputs done", a)
            time.sleep(1.0)   # time enough for a file to be (wrongly) converted a second time
            assert a.stop() == 0 and b.stop() == 0
        results = Counter(input_of(x) for x in names(outbox / "colorize") if not x.startswith("."))
        done = Counter(x.rsplit("_before", 1)[0] for r in rigs for x in names(r.done()))
        failed = [x for x in names(a.failed()) if not x.endswith(".reason.txt")]
        stems = [name.rsplit("_before", 1)[0] for name in flood.delivered]
        twice = sorted(s for s in stems if results[s] > 1 or done[s] > 1)
        lost = sorted(s for s in stems if results[s] == 0)
        left = leftovers(inbox / "colorize", rigs)
    finally:
        for r in rigs:
            r.close()
        shutil.rmtree(share, ignore_errors=True)
    record("two services, state folders of their own on disk, one inbox and outbox shared on a tmpfs; "
           "a reload and a kill -9 of each during the flood", f"{n} files", len(lost), len(twice),
           max(a.peak_kb, b.peak_kb), time.monotonic() - t0)
    assert twice == [], (twice[:10], events)
    assert lost == [] and failed == [], (lost[:10], failed[:10], events)
    assert sum(results.values()) == n and not checker.problems, checker.problems[:10]
    assert left == [], f"nothing left waiting, claimed, locked or half-written: {left[:10]}"
    # Both really worked, and B's start-up met A's files in flight (the case that used to double them).
    assert all(len(names(r.done())) > 0 for r in rigs), events
    assert "0 of A's" not in events[0], events
