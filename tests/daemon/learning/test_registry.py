"""The model registry: numbered versions, an atomic champion pointer, history, pruning, the models command."""

import shutil
import threading

import pytest

from daemon.commands.cli import main as cli
from daemon.core.config import load_config
from daemon.learning.serving import model_dir
from daemon.learning.registry import Registry, RegistryError, open_registry
from tests.support.config import write_config
from unet import load_model


@pytest.fixture
def cfg(tmp_path, tiny_models):
    return load_config(write_config(tmp_path, {"colorize": tiny_models["colorize"]}))


def _stage(reg: Registry, model) -> object:
    """A staged copy of a model folder, as a training run leaves it."""
    stage = reg.staging()
    for f in model.iterdir():
        shutil.copy2(f, stage / f.name)
    return stage


def test_the_shipped_model_becomes_version_1_on_first_use(cfg, tiny_models):
    root = cfg.state_dir("models", "colorize")
    assert Registry(root).champion_dir() is None  # nothing yet: the service serves the shipped folder
    assert model_dir(cfg, "colorize") == tiny_models["colorize"]

    reg = open_registry(cfg, "colorize")
    assert reg.champion_version() == 1
    assert reg.champion_dir() == root / "v0001"
    assert model_dir(cfg, "colorize") == root / "v0001"
    model = load_model(reg.champion_dir())
    assert model.version == 1 and model.meta["status"] == "champion"
    [entry] = reg.history()
    assert entry["action"] == "import" and entry["to"] == 1 and entry["who"] and entry["time"]
    open_registry(cfg, "colorize")  # a second open imports nothing
    assert len(reg.versions()) == 1 and len(reg.history()) == 1


def test_a_changed_configured_model_takes_over_and_rollback_returns(tiny_models, tmp_path):
    shipped = shutil.copytree(tiny_models["colorize"], tmp_path / "shipped")  # changed below: a copy
    cfg = load_config(write_config(tmp_path / "svc", {"colorize": shipped}))
    reg = open_registry(cfg, "colorize")
    v2 = reg.add(_stage(reg, tiny_models["colorize"]), promote=True, who="test", why="fine-tuned", parent=1)
    open_registry(cfg, "colorize")  # the configured model is unchanged: the fine-tune keeps serving
    assert reg.champion_version() == v2

    # A new release ships other weights in the same folder (or the config points elsewhere).
    m = load_model(shipped)
    import torch

    with torch.no_grad():
        m.net.head.bias.add_(0.1)
    from unet import save_model

    save_model(m, shipped)
    reg = open_registry(cfg, "colorize")
    v3 = reg.champion_version()
    assert v3 == 3 and reg.version(3).meta["parent"] == v2 and "changed" in reg.version(3).meta["why"]
    assert reg.version(v2).status == "retired"
    open_registry(cfg, "colorize")
    assert reg.champion_version() == 3, "imported once, not at every start"
    assert reg.rollback("test") == v2, "the operator can go back to the fine-tune"
    open_registry(cfg, "colorize")
    assert reg.champion_version() == v2, "a rolled-back import is not imported again"


def test_promotion_retires_the_old_champion_and_rejection_changes_nothing(cfg, tiny_models):
    reg = open_registry(cfg, "colorize")
    v2 = reg.add(_stage(reg, tiny_models["colorize"]), promote=True, who="test", why="better", parent=1)
    assert v2 == 2 and reg.champion_version() == 2
    assert reg.version(1).status == "retired" and reg.version(2).status == "champion"
    v3 = reg.add(_stage(reg, tiny_models["colorize"]), promote=False, who="test", why="worse", parent=2)
    assert v3 == 3 and reg.champion_version() == 2 and reg.version(3).status == "rejected"
    assert reg.version(3).meta["why"] == "worse" and reg.version(3).meta["parent"] == 2
    actions = [(e["action"], e["from"], e["to"], e["why"]) for e in reg.history()]
    assert actions[1:] == [("promote", 1, 2, "better"), ("reject", 2, 2, "worse")]
    assert not list(reg.root.glob(".staging-*")), "staged folders are renamed into place, none left behind"


def test_rollback_returns_to_the_parent_and_says_when_there_is_none(cfg, tiny_models):
    reg = open_registry(cfg, "colorize")
    with pytest.raises(RegistryError, match="no parent"):
        reg.rollback("test")
    reg.add(_stage(reg, tiny_models["colorize"]), promote=True, who="test", why="better", parent=1)
    assert reg.rollback("test", "looked wrong") == 1
    assert reg.champion_version() == 1 and reg.version(2).status == "rejected"
    assert reg.history()[-1]["action"] == "rollback" and reg.history()[-1]["from"] == 2


def test_pruning_keeps_the_newest_rejected_and_never_the_champion_or_its_parent(cfg, tiny_models):
    reg = open_registry(cfg, "colorize")
    reg.keep_rejected = 1

    def add(promote, parent):
        return reg.add(_stage(reg, tiny_models["colorize"]), promote=promote, who="t", why="x", parent=parent)

    add(False, 1)                                        # 2
    add(False, 1)                                        # 3: now 2 is one rejected too many
    assert [v.number for v in reg.versions()] == [1, 3]
    assert any(e["action"] == "prune" and e["version"] == 2 for e in reg.history())

    reg.keep_rejected = 0
    reg.promote(3, "t", "by hand")                       # champion 3, parent 1
    reg.rollback("t")                                    # champion 1 again; 3 is rejected now
    add(True, 3)                                         # 4: champion, its parent is the rejected 3
    add(False, 4)                                        # 5: rejected, pruned at once
    assert [v.number for v in reg.versions()] == [1, 3, 4]
    assert reg.version(3).status == "rejected", "the champion's parent stays, whatever its status"
    assert add(False, 4) == 6, "numbers of pruned versions are never handed out again"


def test_a_reader_polling_the_champion_never_sees_a_half_written_pointer(cfg, tiny_models):
    reg = open_registry(cfg, "colorize")
    reg.add(_stage(reg, tiny_models["colorize"]), promote=True, who="t", why="b", parent=1)
    seen, done = set(), threading.Event()

    def poll():
        reader = Registry(reg.root)
        while not done.is_set():
            seen.add(reader.champion_version())

    t = threading.Thread(target=poll)
    t.start()
    for i in range(40):
        reg.promote(1 if i % 2 == 0 else 2, "t", "flip")
    done.set()
    t.join()
    assert seen <= {1, 2} and None not in seen


def test_the_models_command_lists_promotes_and_rolls_back(tmp_path, tiny_models, capsys):
    config = write_config(tmp_path, {"colorize": tiny_models["colorize"]})
    reg = open_registry(load_config(config), "colorize")
    reg.add(_stage(reg, tiny_models["colorize"]), promote=False, who="t", why="it was duller", parent=1)

    assert cli(["models", "--config", str(config), "--queue", "colorize", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(col in lines[0] for col in ("PSNR", "colorful", "ab AuC"))
    assert lines[1].startswith("*") and " 1 " in lines[1] and "champion" in lines[1]
    assert "rejected" in lines[2] and "it was duller" in lines[2]

    assert cli(["models", "--config", str(config), "--queue", "colorize", "promote", "2"]) == 0
    assert reg.champion_version() == 2 and "version 2 is the champion" in capsys.readouterr().out
    assert reg.history()[-1]["who"].startswith("reverser models")

    assert cli(["models", "--config", str(config), "--queue", "colorize", "rollback"]) == 0
    assert reg.champion_version() == 1

    assert cli(["models", "--config", str(config), "--queue", "colorize", "promote", "9"]) == 65
    assert "no version 9" in capsys.readouterr().err
    assert cli(["models", "--config", str(config), "--queue", "nope", "list"]) == 64


def test_a_version_that_does_not_load_is_never_made_champion(cfg, tiny_models):
    reg = open_registry(cfg, "colorize")
    n = reg.add(_stage(reg, tiny_models["colorize"]), promote=False, who="t", why="for the test", parent=1)
    weights = reg.version(n).path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])   # cut short
    with pytest.raises(RegistryError, match="does not load"):
        reg.promote(n, "t", "by hand")
    assert reg.champion_version() == 1 and reg.history()[-1]["action"] != "promote"


# A process out of file handles: every handle taken, then the model checks run. Each must say "try again",
# never that the model does not load (which would refuse a good version for good). A child process, so this
# one keeps its handles.
OUT_OF_HANDLES = r"""
import os, resource, sys
from pathlib import Path
from daemon.core.config import load_config
from daemon.learning.registry import RegistryError, open_registry
from daemon.preflight import _check_model
from unet.checkpoint import CheckpointError, load_model
cfg = load_config(Path(sys.argv[1]))
reg = open_registry(cfg, "colorize")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
said = []
try:
    reg.promote(1, "test", "again")
except RegistryError as e:
    said.append(str(e))
said.append(str(_check_model(cfg, "colorize")[1]))
for fd in held:
    os.close(fd)
load_model(reg.champion_dir())   # with handles again, it loads
print("\n=====\n".join(said))
"""


def test_a_model_check_short_of_file_handles_says_try_again_not_that_the_model_is_broken(cfg):
    import subprocess

    from tests.support.processes import PYTHON, child_env

    r = subprocess.run([PYTHON, "-c", OUT_OF_HANDLES, str(cfg.file)], env=child_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    promote, check = r.stdout.strip().split("\n=====\n")
    assert "too many files are open; try again in a moment" in promote and "does not load" not in promote
    assert "cannot check the model now" in check and "try again in a moment" in check


def test_models_takes_its_options_after_the_verb_and_a_closed_pipe_is_no_error(cfg, capsys):
    import subprocess

    from tests.support.processes import PYTHON, child_env

    assert cli(["models", "list", "--config", str(cfg.file), "--queue", "colorize"]) == 0
    assert "champion" in capsys.readouterr().out
    assert cli(["models", "--config", str(cfg.file), "list"]) == 64
    assert "--queue is required" in capsys.readouterr().err
    # A reader that has gone before it is written to (`| head -1` done, here `| true`): the command ends
    # quietly, without a traceback.
    r = subprocess.run(f"'{PYTHON}' -m daemon models --config '{cfg.file}' --queue colorize list | true",
                       shell=True, env=child_env(), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
