"""The claim protocol on real folders: claim, done, quarantine with a reason, recovery after a crash."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.conversion.claims.owners import Owner
from daemon.conversion.claims.spool import Lost, Spool
from daemon.core.config import parse_config
from daemon.core.fs import move_into, sweep_temp
from tests.support.filesystems import other_filesystem
from tests.support.processes import PYTHON, ROOT
from tests.support.service import names


def drop(cfg, name: str, data: bytes = b"image bytes") -> Path:
    path = cfg.inbox("colorize") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_claim_moves_the_file_into_work_and_keeps_its_name(cfg, owner):
    spool = Spool(cfg, "colorize", owner)
    item = spool.claim(drop(cfg, "a b_before.jpg"))
    assert item.path.parent == cfg.state_dir("work", "colorize") and item.path.read_bytes() == b"image bytes"
    assert item.name == "a b_before.jpg" and names(cfg.inbox("colorize")) == []
    with pytest.raises(Lost):
        spool.claim(cfg.inbox("colorize") / "a b_before.jpg")


def test_a_name_too_long_to_carry_a_ticket_is_claimed_into_a_folder_and_recovered(cfg, owner):
    long = "n" * (255 - len("_before.jpg")) + "_before.jpg"
    spool = Spool(cfg, "colorize", owner)
    item = spool.claim(drop(cfg, long))
    assert item.name == long and item.path.name == long and item.ticket and item.path.read_bytes() == b"image bytes"
    later = Owner(cfg.state_dir("work"))   # the first instance is killed; a new one starts
    try:
        owner.close()
        again = Spool(cfg, "colorize", later).recover()
        # Taken back under a ticket of the new instance, still in a folder of its own.
        assert [(c.name, c.ticket.rpartition("-")[0]) for c in again] == [(long, later.id)]
        assert os.listdir(cfg.state_dir("work", "colorize")) == [f"{again[0].ticket}@"]
        dest = Spool(cfg, "colorize", later).quarantine(again[0], "a test")
        assert dest.name == long and names(cfg.state_dir("work", "colorize")) == []
        (note,) = [n for n in names(cfg.failed("colorize")) if n.endswith(".reason.txt")]
        assert len(note.encode()) <= 255 and long in (cfg.failed("colorize") / note).read_text()
    finally:
        later.close()


def test_of_two_claimants_exactly_one_wins_each_file(cfg, owner):
    other = Owner(cfg.state_dir("work"))
    spools = [Spool(cfg, "colorize", owner), Spool(cfg, "colorize", other)]
    paths = [drop(cfg, f"f{i}_before.jpg") for i in range(200)]
    wins = [[], []]

    def race(k):
        for p in paths:
            try:
                wins[k].append(spools[k].claim(p).name)
            except Lost:
                pass

    threads = [threading.Thread(target=race, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert sorted(wins[0] + wins[1]) == sorted(p.name for p in paths)
    assert len(names(cfg.state_dir("work", "colorize"))) == 200


def test_done_keeps_inputs_without_replacing_older_ones(cfg, owner):
    spool = Spool(cfg, "colorize", owner)
    for data in (b"first", b"second"):
        spool.done(spool.claim(drop(cfg, "same_before.jpg", data)))
    done = cfg.state_dir("done", "colorize")
    assert names(done) == ["same_before-1.jpg", "same_before.jpg"]
    assert (done / "same_before.jpg").read_bytes() == b"first"
    assert names(cfg.state_dir("work", "colorize")) == []


def test_done_deletes_inputs_when_told_not_to_keep_them(tmp_path, owner):
    cfg = parse_config({"output": {"keep_inputs": False},
                        "queues": {"colorize": {"task": "colorize", "model": "m"}}}, base=tmp_path)
    spool = Spool(cfg, "colorize", owner)
    assert spool.done(spool.claim(drop(cfg, "gone_before.jpg"))) is None
    assert names(cfg.state_dir("done", "colorize")) == [] and names(cfg.state_dir("work", "colorize")) == []


def test_quarantine_puts_the_input_beside_the_outputs_with_a_reason(cfg, owner):
    spool = Spool(cfg, "colorize", owner)
    dest = spool.quarantine(spool.claim(drop(cfg, "bad_before.jpg", b"junk")), "cannot decode image: truncated")
    assert dest == cfg.failed("colorize") / "bad_before.jpg" and dest.read_bytes() == b"junk"
    reason = (cfg.failed("colorize") / "bad_before.jpg.reason.txt").read_text()
    assert "cannot decode image: truncated" in reason          # what went wrong
    assert time.strftime("%Y-%m-%d") in reason                 # when
    assert "what to do" in reason and str(cfg.inbox("colorize")) in reason
    # A second failure of the same name never replaces the first one or its reason.
    spool.quarantine(spool.claim(drop(cfg, "bad_before.jpg", b"junk2")), "another problem", "do this")
    assert names(cfg.failed("colorize")) == ["bad_before-1.jpg", "bad_before-1.jpg.reason.txt",
                                             "bad_before.jpg", "bad_before.jpg.reason.txt"]
    assert "do this" in (cfg.failed("colorize") / "bad_before-1.jpg.reason.txt").read_text()


def test_recovery_takes_back_a_dead_services_files_but_not_a_live_ones(cfg, owner):
    work = cfg.state_dir("work", "colorize")
    work.mkdir(parents=True)
    (work / "123xdead00-0@old_before.jpg").write_bytes(b"a")   # its owner holds no lock: it crashed
    time.sleep(0.01)
    (work / "123xdead00-1@new_before.jpg").write_bytes(b"b")
    live = Owner(cfg.state_dir("work"))
    Spool(cfg, "colorize", live).claim(drop(cfg, "busy_before.jpg"))
    spool = Spool(cfg, "colorize", owner)
    mine = spool.claim(drop(cfg, "mine_before.jpg"))
    got = spool.recover()
    assert [c.name for c in got] == ["old_before.jpg", "new_before.jpg"]   # oldest first, names restored
    assert [c.name for c in spool.recover(include_own=True)] == ["old_before.jpg", "new_before.jpg", mine.name]
    live.close()  # now that service is gone too
    assert "busy_before.jpg" in [c.name for c in spool.recover()]


def half_moved(cfg, name: str, into: Path, data: bytes = b"image bytes") -> Path:
    """What a kill -9 inside move_into leaves: the input in work/ under a dead instance's ticket,
    and a second link to it already in its destination folder."""
    work = cfg.state_dir("work", "colorize")
    work.mkdir(parents=True, exist_ok=True)
    into.mkdir(parents=True, exist_ok=True)
    claimed = work / f"123xdead00-7@{name}"
    claimed.write_bytes(data)
    os.link(claimed, into / name)
    return claimed


def test_a_move_to_done_cut_short_is_finished_at_recovery_not_repeated(cfg, owner):
    # Killed between done/'s link and work/'s unlink, after the result was placed (its receipt has 2 links).
    done, outbox = cfg.state_dir("done", "colorize"), cfg.outbox("colorize")
    claimed = half_moved(cfg, "x_before.jpg", done)
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "x_after.jpg").write_bytes(b"result")
    os.link(outbox / "x_after.jpg", outbox / ".reverser-receipt-123xdead00-7")
    told = []
    assert Spool(cfg, "colorize", owner).recover(settled=lambda *a: told.append(a)) == []   # not converted again
    assert names(done) == ["x_before.jpg"] and not claimed.exists()  # one copy kept, no x_before-1.jpg
    assert names(outbox) == ["x_after.jpg"]                         # the receipt has done its job
    # Who asked hears where it went, as a finished file would have said: its result, its input in done/.
    assert [(c.name, result, kept) for c, result, kept in told] == [("x_before.jpg", outbox / "x_after.jpg",
                                                                      done / "x_before.jpg")]


def converted_with_done_blocked(cfg) -> tuple[Path, Path]:
    """A dead run's x_before.jpg in work/ whose result was placed (the receipt has 2 links), and a file where
    done/ should be, so the input cannot leave work/: (done, outbox)."""
    done, outbox = cfg.state_dir("done", "colorize"), cfg.outbox("colorize")
    half_moved(cfg, "x_before.jpg", cfg.state_dir("elsewhere", "colorize"))
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "x_after.jpg").write_bytes(b"result")
    os.link(outbox / "x_after.jpg", outbox / ".reverser-receipt-123xdead00-7")
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_bytes(b"not a folder")
    return done, outbox


def test_a_converted_file_that_cannot_leave_work_is_not_converted_at_the_next_start_either(cfg):
    # Its result was placed, then done/ could not take the input: it stays in work/ under the recovering
    # run's ticket. The receipt must follow it there, or the start after finds no receipt and converts it
    # a second time.
    done, outbox = converted_with_done_blocked(cfg)
    first = Owner(cfg.state_dir("work"))
    assert Spool(cfg, "colorize", first).recover() == []
    first.close()                                       # that run stops too, with the file still in work/
    done.unlink()
    second = Owner(cfg.state_dir("work"))
    told = []
    assert Spool(cfg, "colorize", second).recover(settled=lambda *a: told.append(a)) == []   # not again
    second.close()
    assert names(done) == ["x_before.jpg"] and names(outbox) == ["x_after.jpg"]
    assert [(c.name, result) for c, result, _ in told] == [("x_before.jpg", outbox / "x_after.jpg")]


def test_a_reload_finishes_its_own_converted_file_without_telling_it_again(cfg):
    # As above, but the run that kept it in work/ reloads (recovery of its own claims): it was told (and
    # counted) when it finished, so the reload moves it on without a second report.
    done, outbox = converted_with_done_blocked(cfg)
    run, told = Owner(cfg.state_dir("work")), []
    assert Spool(cfg, "colorize", run).recover(settled=lambda *a: told.append(a)) == []
    assert [c.name for c, _, _ in told] == ["x_before.jpg"]      # the dead run's file: told once
    done.unlink()
    assert Spool(cfg, "colorize", run).recover(include_own=True, settled=lambda *a: told.append(a)) == []
    run.close()
    assert len(told) == 1 and names(done) == ["x_before.jpg"] and names(outbox) == ["x_after.jpg"]


def test_recovery_names_the_result_a_receipt_holds_past_a_name_removed_since(cfg, owner):
    # Results x_after.jpg and x_after-1.jpg, the first removed by hand after the kill: the receipt's other
    # name is found by its inode, not taken to be the first free name.
    outbox = cfg.outbox("colorize")
    half_moved(cfg, "x_before.jpg", cfg.state_dir("done", "colorize"))
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "x_after-1.jpg").write_bytes(b"ours")
    (outbox / "x_after-2.jpg").write_bytes(b"a later one of the same name")
    os.link(outbox / "x_after-1.jpg", outbox / ".reverser-receipt-123xdead00-7")
    told = []
    Spool(cfg, "colorize", owner).recover(settled=lambda *a: told.append(a))
    assert [result.name for _, result, _ in told] == ["x_after-1.jpg"]


def test_a_quarantine_cut_short_is_taken_back_and_the_file_tried_again(cfg, owner):
    failed = cfg.failed("colorize")
    claimed = half_moved(cfg, "bad_before.jpg", failed, b"junk")
    spool = Spool(cfg, "colorize", owner)
    got = spool.recover()
    assert [c.name for c in got] == ["bad_before.jpg"] and not claimed.exists() and names(failed) == []
    spool.quarantine(got[0], "cannot decode image")                 # it fails again: one copy, one reason
    assert names(failed) == ["bad_before.jpg", "bad_before.jpg.reason.txt"]


def test_a_second_move_of_the_same_file_reuses_the_first_link(cfg):
    done = cfg.state_dir("done", "colorize")
    src = half_moved(cfg, "y_before.jpg", done)
    assert move_into(src, done, "y_before.jpg") == done / "y_before.jpg"
    assert names(done) == ["y_before.jpg"] and not src.exists()


_RECOVER = """
import sys
from daemon.conversion.claims.owners import Owner
from daemon.conversion.claims.spool import Spool
from daemon.core.config import parse_config
cfg = parse_config({"queues": {"colorize": {"task": "colorize", "model": "m"}}}, base=sys.argv[1])
owner = Owner(cfg.state_dir("work"))
spool = Spool(cfg, "colorize", owner)
print("ready", flush=True)
sys.stdin.readline()
print("\\n".join(c.name for c in spool.recover()), flush=True)
"""


def test_of_two_services_starting_at_once_exactly_one_recovers_each_file(cfg, tmp_path):
    work = cfg.state_dir("work", "colorize")
    work.mkdir(parents=True)
    left = [f"f{i:03d}_before.jpg" for i in range(300)]
    for i, name in enumerate(left):
        (work / f"123xdead00-{i}@{name}").write_bytes(b"x")   # a killed instance's claims
    procs = [subprocess.Popen([PYTHON, "-c", _RECOVER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # both recover at the same moment
            p.stdin.write("go\n")
            p.stdin.flush()
        got = [set(filter(None, p.communicate(timeout=60)[0].splitlines())) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert got[0] | got[1] == set(left) and not got[0] & got[1]


def test_a_lock_held_by_another_process_counts_as_alive(cfg, owner):
    # A real second process holds a lock as Owner does; when it is killed, the kernel drops the lock.
    script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
              "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    lock = owner.dir / "999xother-lock.lock"
    proc = subprocess.Popen([PYTHON, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert owner.is_alive("999xother-lock")
    finally:
        proc.kill()
        proc.wait()
    assert not owner.is_alive("999xother-lock") and not lock.exists()


def test_move_into_copies_across_filesystems(tmp_path):
    src = other_filesystem(tmp_path) / f"reverser-test-{os.getpid()}_before.jpg"
    src.write_bytes(b"across")
    try:
        dest = move_into(src, tmp_path / "failed", "x_before.jpg")
    finally:
        src.unlink(missing_ok=True)
    assert dest.read_bytes() == b"across" and not src.exists() and names(tmp_path / "failed") == ["x_before.jpg"]
    # Cut short after the copy was placed, the move is finished, not made again as x_before-1.jpg.
    src.write_bytes(b"across")
    try:
        assert move_into(src, tmp_path / "failed", "x_before.jpg") == dest
    finally:
        src.unlink(missing_ok=True)
    assert names(tmp_path / "failed") == ["x_before.jpg"] and not src.exists()


def test_sweep_removes_only_old_temporary_files(tmp_path):
    old, fresh, other = (tmp_path / ".reverser-aaa.tmp", tmp_path / ".reverser-bbb.tmp", tmp_path / "keep.jpg")
    for p in (old, fresh, other):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert sweep_temp(tmp_path) == 1
    assert names(tmp_path) == [".reverser-bbb.tmp", "keep.jpg"]


def test_sweep_removes_a_dead_instances_temporary_files_at_once(tmp_path):
    alive = Owner(tmp_path / "work")
    try:
        mine, theirs = tmp_path / f".reverser-{alive.id}-aaa.tmp", tmp_path / ".reverser-999xdead00-bbb.tmp"
        receipt = tmp_path / ".reverser-receipt-999xdead00-3"
        for p in (mine, theirs, receipt):
            p.write_bytes(b"x")
        assert sweep_temp(tmp_path, is_alive=alive.is_alive) == 1
        assert mine.exists() and receipt.exists() and not theirs.exists()
    finally:
        alive.close()


def test_two_services_with_their_own_state_never_take_each_others_claims_from_a_shared_inbox(tmp_path):
    # Several hosts, one shared inbox, local state: the inbox on another filesystem than both states,
    # so both claim into inbox/<q>/.reverser-work/. Each must judge the other's claims there as alive.
    share = other_filesystem(tmp_path) / f"reverser-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        cfgs = [parse_config({"paths": {"inbox": str(share / "inbox"), "outbox": str(share / "outbox"),
                                        "state": str(tmp_path / host / "var")},
                              "queues": {"colorize": {"task": "colorize", "model": "m"}}}, base=tmp_path)
                for host in ("a", "b")]
        a = Owner(cfgs[0].state_dir("work"))
        spool_a = Spool(cfgs[0], "colorize", a)
        taken = [spool_a.claim(drop(cfgs[0], f"f{i}_before.jpg")) for i in range(3)]
        assert all(c.path.parent == share / "inbox" / "colorize" / ".reverser-work" for c in taken)
        b = Owner(cfgs[1].state_dir("work"))
        try:
            spool_b = Spool(cfgs[1], "colorize", b)
            assert spool_b.recover() == [], "B took A's files in flight for a crashed instance's"
            assert all(c.path.exists() for c in taken)
            assert b.is_alive(a.id)   # and A's temporary files in the shared outbox are A's, not a dead one's
            a.close()                 # A is gone (a clean stop; a kill -9 drops its lock the same way)
            assert sorted(c.name for c in spool_b.recover()) == [f"f{i}_before.jpg" for i in range(3)]
        finally:
            b.close()
    finally:
        subprocess.run(["rm", "-rf", str(share)])
