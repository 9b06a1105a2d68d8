"""Model faults: a broken version made champion (by hand, behind the registry's back, or by a training
run that goes to NaN) never replaces the model that serves. Each says what is wrong, plainly, and the
previous champion goes on converting in the running service."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import torch

from daemon.learning.intake import PairIntake
from daemon.core.fs import now_iso, write_json
from daemon.learning.registry import Registry
from tests.support.images import make_image
from tests.support.processes import PYTHON
from tests.support.pairs import write_pairs
from tests.support.rig import Rig, poll
from unet import TaskConfig, UNetConfig, load_model, new_model, save_model

MARKER_NAME = "pickle-payload-ran"


class _Payload:
    """Unpickling this runs a shell command that leaves a marker file: a checkpoint that carries code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _serving_version(rig: Rig):
    try:
        return json.loads((rig.cfg.paths.state / "status.json").read_text())["queues"]["colorize"]["model"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _converts(rig: Rig, name: str) -> None:
    make_image(rig.inbox() / f"{name}_before.png", (64, 48), "L", seed=len(name))
    poll(lambda: (rig.outbox() / f"{name}_after.png").exists(), 60, f"{name} converted", rig)


def _broken_version(reg: Registry, n: int, spoil) -> Path:
    """Version n: a copy of version 1 with spoil(folder) applied, registered behind the registry's back."""
    folder = reg.root / f"v{n:04d}"
    shutil.copytree(reg.root / "v0001", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(version=n, parent=1, status="rejected", why="made broken by the reliability suite")
    (folder / "meta.json").write_text(json.dumps(meta))
    spoil(folder)
    return folder


def _corrupt(folder: Path) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:64] = b"\xff" * 56           # the header, garbled
    (folder / "model.safetensors").write_bytes(bytes(data[: len(data) // 2]))  # and cut short


def _pickled(marker: Path):
    def spoil(folder: Path) -> None:
        state = load_model(folder).net.state_dict()
        state["__payload__"] = _Payload(marker)
        torch.save(state, folder / "model.safetensors")   # a pickle under the safetensors name
        torch.save(state, folder / "model.pt")            # and one under its usual name
    return spoil


def _other_architecture(folder: Path) -> None:
    torch.manual_seed(1)
    other = new_model(TaskConfig("colorize", work_long=64, bins_per_axis=8), UNetConfig(widths=(4, 8), middle_blocks=1))
    tmp = folder.parent / f".other-{folder.name}"
    save_model(other, tmp)
    shutil.copy(tmp / "model.safetensors", folder / "model.safetensors")  # weights of another network
    shutil.rmtree(tmp)


def test_a_broken_champion_is_refused_and_the_previous_one_keeps_serving(tmp_path, tiny_models, service_env,
                                                                          record):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env)
    marker = tmp_path / MARKER_NAME
    t0 = time.monotonic()
    faults = [("corrupt model.safetensors", _corrupt, "safetensors"),
              ("pickled checkpoint carrying a payload", _pickled(marker), "safetensors"),
              ("weights of another architecture", _other_architecture, "do not match")]
    converted = 0
    try:
        rig.start()
        reg = Registry(rig.cfg.state_dir("models", "colorize"))
        poll(lambda: _serving_version(rig) == 1, 30, "version 1 serving", rig)
        for i, (what, spoil, words) in enumerate(faults):
            n = i + 2
            _broken_version(reg, n, spoil)
            # By hand, through the CLI: it must refuse to promote a version that does not load.
            r = subprocess.run([PYTHON, "-m", "daemon", "models", "--config", str(rig.cfg_path), "--queue",
                                "colorize", "promote", str(n)], env=service_env, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode != 0, f"{what}: promoted anyway:\n{r.stdout}{r.stderr}"
            assert words in r.stderr, f"{what}: the refusal does not say why:\n{r.stderr}"
            assert reg.champion_version() == 1
            # Behind the registry's back: the champion pointer names it. The running service must refuse it.
            write_json(reg.root / "champion.json", {"version": n, "since": now_iso()})
            rig.current.wait_log(f"v{n:04d} does not load", 60)
            assert words in rig.log().split(f"v{n:04d} does not load", 1)[1].splitlines()[0], what
            _converts(rig, f"after{n}")
            converted += 1
            assert _serving_version(rig) == 1 and rig.alive()
            write_json(reg.root / "champion.json", {"version": 1, "since": now_iso()})
        assert not marker.exists(), "the pickle's payload ran"
        assert rig.stop() == 0
    finally:
        rig.close()
    record("model faults: corrupt, pickled with a payload, other architecture", f"{len(faults)} versions",
           len(faults) - converted, 0, rig.peak_kb, time.monotonic() - t0)
    assert not marker.exists(), "the pickle's payload ran"


def test_a_broken_champion_at_start_gives_way_to_the_previous_one(tmp_path, tiny_models, service_env, record):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env)
    t0 = time.monotonic()
    try:
        rig.start()
        poll(lambda: _serving_version(rig) == 1, 30, "version 1 serving", rig)
        assert rig.stop() == 0
        reg = Registry(rig.cfg.state_dir("models", "colorize"))
        _broken_version(reg, 2, _corrupt)
        write_json(reg.root / "champion.json", {"version": 2, "since": now_iso()})  # damaged while it was down
        rig.start()
        assert "serving version 1" in rig.log() and "v0002" in rig.log(), rig.log()[-3000:]
        _converts(rig, "after-restart")
        assert _serving_version(rig) == 1 and rig.alive()
        assert rig.stop() == 0
    finally:
        rig.close()
    record("model faults: a champion damaged while the service was down", "1 restart", 0, 0, rig.peak_kb,
           time.monotonic() - t0)


def _nan_in_training(folder: Path) -> None:
    """A champion that serves well but whose training goes to NaN at the first step.

    Its last batch-norm layer scales by 3e38 and its running variance (1e38) cancels that in
    inference, the head's weights taking the rest (ReLU between them is scale-free); in training
    the layer normalizes with the batch's own statistics, so its output overflows float32 to
    inf and the loss becomes NaN.
    """
    model = load_model(folder)
    bn = [m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        bn.weight.mul_(3e38)
        bn.bias.mul_(3e19)
        bn.running_var.mul_(1e38)
        model.net.head.weight.mul_(1 / 3e19)
    save_model(model, folder)


def test_a_training_run_that_goes_to_nan_changes_nothing_and_the_champion_keeps_serving(tmp_path, service_env,
                                                                                        record):
    from tests.support.pairs import tiny_champion

    shipped = tiny_champion(tmp_path / "shipped" / "colorize")
    _nan_in_training(shipped)
    # The fault comes at the first training step, not at a time: a budget of an hour lets any machine,
    # however slow or busy, load and score the champion and reach that step (a budget of seconds left a
    # busy one no step at all, and the run ended "rejected" instead). The NaN ends the run at once.
    rig = Rig(tmp_path, {"colorize": shipped}, service_env,
              "[retrain]\nenabled = true\nmin_new_pairs = 20\nthreads = 1\nmax_minutes = 60\n")
    write_pairs(rig.cfg.train_inbox("colorize"), 30)
    PairIntake(rig.cfg, "colorize").scan()
    # A night was missed while the service was down: it trains once, right at start.
    write_json(rig.cfg.state_dir("reports") / "schedule.json", {"last_run": "2020-01-01T03:00:00+00:00"})
    t0 = time.monotonic()
    try:
        rig.start()
        _converts(rig, "during")
        rig.current.wait_log("retrain colorize", 60)
        # The run's end, whatever it decided ("next run" follows every run); the history is written
        # before it: wait for the line, then read both.
        rig.current.wait_log("retraining: next run", 600)
        failed = re.search(r"training failed, the champion \(version 1\) keeps serving: "
                           r"loss became (\S+) at step (\d+)", rig.log())
        assert failed and failed[1] in ("nan", "inf") and failed[2] == "0", rig.log()[-3000:]
        reg = Registry(rig.cfg.state_dir("models", "colorize"))
        assert [e["action"] for e in reg.history()][-1] == "failed"
        assert reg.champion_version() == 1 and [v.number for v in reg.versions()] == [1]
        _converts(rig, "after")
        assert _serving_version(rig) == 1 and rig.alive()
        assert rig.stop() == 0
    finally:
        rig.close()
    record("model faults: a training run that goes to NaN", "1 run", 0, 0, rig.peak_kb, time.monotonic() - t0)
