"""The pairs intake: halves arriving apart, timeouts, duplicates, lone color photos, corrupt halves."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from daemon.core.config import load_config
from daemon.learning.counts import mark_trained, read_counts
from daemon.learning.intake import PairIntake
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.service import captured_logs
from unet.data import find_pairs


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def setup(tmp_path, tiny_models):
    cfg = load_config(write_config(tmp_path, tiny_models, "[retrain]\npair_timeout_minutes = 10\n"))
    clock = Clock()
    return cfg, clock, PairIntake(cfg, "colorize", clock=clock)


def _pair(folder, name, seed=0, size=(64, 48), after_size=None):
    color = make_image(folder / f"{name}_after.png", after_size or size, seed=seed)
    before = folder / f"{name}_before.png"
    Image.open(color).convert("L").resize(size).save(before)
    return before, color


def _reason(cfg, name) -> str:
    return (cfg.failed("colorize") / f"{name}.reason.txt").read_text()


def test_halves_arriving_minutes_apart_make_one_pair(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    before, after = _pair(inbox.parent / "elsewhere", "boat", seed=1)
    inbox.mkdir(parents=True)
    shutil.move(before, inbox / before.name)
    assert intake.handle(inbox / "boat_before.png") == "waiting"
    clock.t += 7 * 60                      # seven minutes later, within the ten allowed
    assert intake.handle(inbox / "boat_before.png") == "waiting"  # offered again by a rescan: still waiting
    shutil.move(after, inbox / after.name)
    assert intake.handle(inbox / "boat_after.png") == "filed"

    pairs_dir = cfg.state_dir("pairs", "colorize")
    assert sorted(p.name for p in pairs_dir.glob("*.png")) == ["boat_after.png", "boat_before.png"]
    assert list(inbox.iterdir()) == []
    assert find_pairs([pairs_dir])[0].name == "boat"
    counts = read_counts(pairs_dir)
    assert counts["pairs"] == 1 and counts["new"] == 1
    assert not cfg.failed("colorize").exists()


def test_a_half_left_alone_past_the_timeout_is_quarantined_with_a_reason(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    _pair(inbox, "kite")
    (inbox / "kite_after.png").unlink()
    assert intake.handle(inbox / "kite_before.png") == "waiting"
    clock.t += 9 * 60
    assert intake.sweep() == [] and (inbox / "kite_before.png").exists()
    clock.t += 2 * 60
    assert intake.sweep() == [inbox / "kite_before.png"]
    assert not (inbox / "kite_before.png").exists()
    assert (cfg.failed("colorize") / "kite_before.png").exists()
    reason = _reason(cfg, "kite_before.png")
    assert "kite_after" in reason and "pair_timeout_minutes" in reason and "11 minutes" in reason


def test_a_duplicate_is_refused_whatever_its_name(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    _pair(inbox, "cat", seed=3)
    intake.scan()
    assert read_counts(cfg.state_dir("pairs", "colorize"))["pairs"] == 1
    # The same pictures again, renamed.
    pairs_dir = cfg.state_dir("pairs", "colorize")
    shutil.copy(pairs_dir / "cat_before.png", inbox / "kitty_before.png")
    shutil.copy(pairs_dir / "cat_after.png", inbox / "kitty_after.png")
    intake.scan()
    assert read_counts(pairs_dir)["pairs"] == 1 and read_counts(pairs_dir)["new"] == 1
    reason = _reason(cfg, "kitty_before.png")
    assert "duplicate" in reason and "'cat'" in reason
    assert (cfg.failed("colorize") / "kitty_after.png").exists()
    # Also a fresh intake (after a restart) knows the filed hashes.
    shutil.copy(pairs_dir / "cat_after.png", inbox / "cat2.png")
    assert PairIntake(cfg, "colorize", clock=clock).handle(inbox / "cat2.png") == "refused"


def test_a_lone_color_photo_is_a_pair_and_a_lone_gray_one_is_not(setup, tmp_path, tiny_models):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    make_image(inbox / "sunset.jpg", (80, 60), seed=5)
    make_image(inbox / "old scan.png", (80, 60), mode="L", seed=6)
    intake.scan()
    pairs_dir = cfg.state_dir("pairs", "colorize")
    [pair] = find_pairs([pairs_dir], allow_lone_color=True)
    assert pair.name == "sunset" and pair.before is None and pair.after.name == "sunset_after.jpg"
    assert "in color" in _reason(cfg, "old scan.png")

    # A translate queue learns only from explicit pairs: a lone photo is refused with a reason.
    reverse = PairIntake(cfg, "reverse", clock=clock)
    photo = make_image(cfg.train_inbox("reverse") / "street.jpg", (80, 60), seed=7)
    assert reverse.handle(photo) == "refused"
    assert "NAME_before" in (cfg.failed("reverse") / "street.jpg.reason.txt").read_text()


def test_a_corrupt_half_sends_both_halves_back_with_a_reason_naming_it(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    before, after = _pair(inbox, "dog", seed=8)
    jpg = inbox / "dog_after.jpg"
    Image.open(after).save(jpg, quality=90)
    after.unlink()
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 3])  # a download cut short
    intake.scan()
    assert not any(cfg.state_dir("pairs", "colorize").glob("dog*"))
    failed = cfg.failed("colorize")
    assert (failed / "dog_before.png").exists() and (failed / "dog_after.jpg").exists()
    reason = _reason(cfg, "dog_after.jpg")
    assert "after half dog_after.jpg" in reason and "cannot be used" in reason


def test_a_link_in_the_train_inbox_is_refused_and_its_target_left_alone(setup, tmp_path):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    inbox.mkdir(parents=True)
    target = make_image(tmp_path / "private" / "secret.png", (64, 48), seed=13)
    (inbox / "secret.png").symlink_to(target)
    intake.scan()
    assert target.exists() and not list(cfg.state_dir("pairs", "colorize").glob("*.png"))
    assert (cfg.failed("colorize") / "secret.png").is_symlink()
    assert "not a regular file" in _reason(cfg, "secret.png")


def test_sizes_that_differ_are_filed_with_a_note_and_other_pictures_are_refused(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    _pair(inbox, "big", seed=9, size=(64, 48), after_size=(128, 96))   # same picture, twice the size
    _pair(inbox, "odd", seed=10, size=(64, 48), after_size=(64, 64))   # not the same framing
    intake.scan()
    pairs_dir = cfg.state_dir("pairs", "colorize")
    [entry] = [json.loads(line) for line in (pairs_dir / "index.jsonl").read_text().splitlines()]
    assert entry["name"] == "big" and "resized" in entry["note"] and "128x96" in entry["note"]
    assert "same picture" in _reason(cfg, "odd_before.png")


def test_a_taken_name_with_new_pictures_is_filed_under_a_new_name(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    _pair(inbox, "tree", seed=11)
    intake.scan()
    _pair(inbox, "tree", seed=12)
    intake.scan()
    names = [p.name for p in find_pairs([cfg.state_dir("pairs", "colorize")])]
    assert names == ["tree", "tree-2"]


def test_new_pairs_stop_counting_as_new_after_a_training_run(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    for i in range(3):
        _pair(inbox, f"p{i}", seed=20 + i)
    intake.scan()
    pairs_dir = cfg.state_dir("pairs", "colorize")
    assert read_counts(pairs_dir)["new"] == 3
    _pair(inbox, "late", seed=30)
    intake.scan()                              # arrived while a run that used the first 3 trained
    counts = mark_trained(pairs_dir, True, used_new=3)
    assert counts["pairs"] == 4 and counts["new"] == 1 and counts["last_training"]


def test_behind_the_real_watcher_halves_pair_up_and_a_lone_half_times_out(tmp_path, tiny_models):
    # The wiring the service uses: a Watcher on inbox/<queue>/train/ handing complete files to handle().
    import time

    from daemon.core.names import is_pair_file as accepts
    from daemon.conversion.watching.watcher import Watcher

    cfg = load_config(write_config(tmp_path, tiny_models, "[retrain]\npair_timeout_minutes = 0.06\n"))
    intake = PairIntake(cfg, "colorize")
    inbox = cfg.train_inbox("colorize")
    watcher = Watcher({inbox: intake.handle}, accept=accepts, settle=0.2, rescan=0.3, label="pairs")
    watcher.start()
    try:
        outside = tmp_path / "outside"
        before, after = _pair(outside, "owl", seed=40)
        _pair(outside, "lonely", seed=41)
        inbox.mkdir(parents=True, exist_ok=True)
        shutil.move(before, inbox / before.name)
        shutil.move(outside / "lonely_before.png", inbox / "lonely_before.png")
        time.sleep(1.0)                                  # the after comes a little later
        shutil.move(after, inbox / after.name)
        pairs_dir = cfg.state_dir("pairs", "colorize")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                (pairs_dir / "owl_after.png").exists() and (cfg.failed("colorize") / "lonely_before.png").exists()):
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert (pairs_dir / "owl_before.png").exists() and (pairs_dir / "owl_after.png").exists()
    assert "lonely_after" in _reason(cfg, "lonely_before.png")
    assert sorted(p.name for p in inbox.iterdir()) == []


def test_filing_lists_the_pairs_folder_once_whatever_the_number_of_pairs(setup, monkeypatch):
    import daemon.learning.counts as counts_module

    cfg, clock, intake = setup
    inbox, pairs = cfg.train_inbox("colorize"), cfg.state_dir("pairs", "colorize")
    listed, counted = [], []
    real_iterdir, real_find = Path.iterdir, counts_module.find_pairs
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self) or real_iterdir(self))
    monkeypatch.setattr(counts_module, "find_pairs", lambda *a, **k: counted.append(a) or real_find(*a, **k))
    for i in range(12):
        make_image(inbox / f"photo{i}.png", (32, 24), seed=i)
        assert intake.handle(inbox / f"photo{i}.png") == "filed"
        if i == 0:
            first = (listed.count(pairs), len(counted))   # the names taken, and the count, read once
    assert (listed.count(pairs), len(counted)) == first and first[0] <= 2
    assert read_counts(pairs)["pairs"] == 12 and read_counts(pairs)["new"] == 12
    # A pair put there by hand since the listing is not replaced.
    make_image(pairs / "boat_after.png", (32, 24), seed=50)
    make_image(inbox / "boat.png", (32, 24), seed=51)
    assert intake.handle(inbox / "boat.png") == "filed"
    assert (pairs / "boat-2_after.png").exists()


def test_a_file_that_cannot_be_filed_is_tried_again_after_longer_pauses_and_logged_once(setup):
    cfg, clock, intake = setup
    inbox, pairs = cfg.train_inbox("colorize"), cfg.state_dir("pairs", "colorize")
    pairs.parent.mkdir(parents=True, exist_ok=True)
    pairs.write_text("in the way")                     # the pairs folder cannot be made
    make_image(inbox / "beach.png", seed=3)
    with captured_logs() as lines:
        assert intake.handle(inbox / "beach.png") == "waiting"
        assert intake.handle(inbox / "beach.png") == "waiting"    # at once again: not tried
        clock.t += 11
        assert intake.handle(inbox / "beach.png") == "waiting"    # tried: fails again; next pause 20 s
        clock.t += 11
        assert intake.handle(inbox / "beach.png") == "waiting"    # within the pause: not tried
    tries = [m for m in lines if "beach.png" in m]
    assert len([m for m in tries if "cannot be filed now" in m]) == 1 and len(tries) == 2, tries
    assert (inbox / "beach.png").exists() and not cfg.failed("colorize").exists()
    pairs.unlink()
    clock.t += 10
    with captured_logs() as lines:
        assert intake.handle(inbox / "beach.png") == "filed"
    assert any("beach.png filed after 2 failed tries" in m for m in lines), lines


def test_a_long_name_and_its_staging_name_fit(setup):
    cfg, clock, intake = setup
    inbox, pairs = cfg.train_inbox("colorize"), cfg.state_dir("pairs", "colorize")
    for seed in (1, 2):
        before, after = _pair(inbox, "p" * 243, seed=seed)   # NAME_before.png: 254 bytes
        assert intake.handle(before) == "waiting" and intake.handle(after) == "filed"
    names = sorted(p.name for p in pairs.glob("*.png"))
    assert len(names) == 4 and all(len(n) <= 255 for n in names)
    assert {n.rsplit("_", 1)[1] for n in names} == {"before.png", "after.png"}
    assert sorted({n.rsplit("_", 1)[0][-2:] for n in names}) == ["-2", "pp"]


def test_a_pair_dropped_together_is_one_line_and_a_half_alone_is_said_once_when_offered_again(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    _pair(inbox, "duo", seed=3)
    make_image(inbox / "solo_before.png", seed=4)
    with captured_logs("INFO") as lines:
        assert intake.handle(inbox / "duo_before.png") == "waiting"
        assert intake.handle(inbox / "duo_after.png") == "filed"
        assert intake.handle(inbox / "solo_before.png") == "waiting"
        assert not [line for line in lines if "waiting for its" in line]   # nothing said on arrival
        clock.t += 30
        for _ in range(3):                                                 # offered again at each scan
            assert intake.handle(inbox / "solo_before.png") == "waiting"
    assert len([line for line in lines if "duo" in line]) == 1, lines      # the pair's one line: filed
    [said] = [line for line in lines if "solo_before.png" in line]
    assert "is waiting for its after half (up to 10 min, then refused)" in said


def test_a_reload_keeps_the_halves_waiting_with_their_clocks(setup):
    cfg, clock, intake = setup
    inbox = cfg.train_inbox("colorize")
    make_image(inbox / "solo_before.png", seed=4)
    intake.handle(inbox / "solo_before.png")
    clock.t += 60
    intake.handle(inbox / "solo_before.png")                               # its wait said once
    clock.t += 8 * 60
    again = PairIntake(cfg, "colorize", clock=clock)                       # the reload's new intake
    again.carry_from(intake)
    with captured_logs("INFO") as lines:
        assert again.handle(inbox / "solo_before.png") == "waiting"
    assert not lines, lines                                                # not said again
    [entry] = again.waiting(5)[1]
    assert entry["waited_seconds"] == 9 * 60                               # its clock kept: refused in 1 min
    clock.t += 2 * 60
    assert again.sweep() == [inbox / "solo_before.png"]
