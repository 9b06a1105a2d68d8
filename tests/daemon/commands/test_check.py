"""`reverser check`: each broken config exits 78 naming the problem; a good one exits 0 with a summary."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from daemon.preflight import ConfigProblems, require_valid, validate
from daemon.commands.cli import main as cli
from daemon.core.config import ConfigError, load_config
from tests.support.config import write_config
from tests.support.processes import PYTHON


def check_child(config, env) -> subprocess.CompletedProcess:
    """`python -m daemon check` in a child process, as a user runs it."""
    return subprocess.run([PYTHON, "-m", "daemon", "check", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=120)


def line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# Broken before any model is touched: load_config refuses them, and the child exits fast.
CONFIG_ERRORS = {
    "bad TOML": ('[runtime]\nmax_batch = 4\n[output]\nformat = png\n', ["not valid TOML"], "format = png"),
    "unknown key": ("[runtime]\nmax_bacth = 4\n", ["[runtime] max_bacth", "unknown key", "did you mean 'max_batch'?"],
                    "max_bacth"),
    "wrong type": ('[runtime]\nmax_delay_ms = "soon"\n', ["[runtime] max_delay_ms", "expected a number, got 'soon'"],
                   "max_delay_ms"),
    "negative value": ("[limits]\nretry_attempts = -1\n", ["[limits] retry_attempts", "expected 1 to 100, got -1"],
                       "retry_attempts"),
    "bad cron": ('[retrain]\nenabled = true\ncron = "at 3 am"\n', ["[retrain] cron", "five fields"], "cron ="),
    "bad device name": ('[runtime]\ndevice = "gpu"\n', ["[runtime] device", '"cuda:N", got \'gpu\''], "device ="),
    "unknown section": ("[metric]\nenabled = true\n", ["metric", "did you mean 'metrics'?"], "[metric]"),
    "bad choice": ('[output]\nformat = "gif"\n', ["[output] format", "'jpeg' or 'png'"], "format ="),
}


@pytest.mark.parametrize("case", CONFIG_ERRORS, ids=list(CONFIG_ERRORS))
def test_broken_config_exits_78_naming_file_key_and_line(tmp_path, tiny_models, service_env, case):
    text, expected, where = CONFIG_ERRORS[case]
    config = tmp_path / "config.toml"
    config.write_text(text + "".join(f'\n[queues.{q}]\ntask = "{"colorize" if q == "colorize" else "translate"}"\n'
                                     f'model = "{m}"\n' for q, m in tiny_models.items()))
    r = check_child(config, service_env)
    assert r.returncode == 78, r.stderr
    assert f"{config}:{line_of(config, where)}:" in r.stderr, r.stderr
    for phrase in expected:
        assert phrase in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "inbox").exists(), "check must not start or create anything"


def test_missing_queues_exits_78(tmp_path, service_env):
    config = tmp_path / "config.toml"
    config.write_text('[runtime]\ndevice = "cpu"\n')
    r = check_child(config, service_env)
    assert r.returncode == 78
    assert "queues: no queues defined" in r.stderr and "[queues.colorize]" in r.stderr


def test_missing_config_file_exits_78(tmp_path, service_env):
    r = check_child(tmp_path / "nope.toml", service_env)
    assert r.returncode == 78
    assert "nope.toml: file not found" in r.stderr and "--config" in r.stderr


def test_queue_without_model_key_points_at_its_section(tmp_path, service_env):
    config = tmp_path / "config.toml"
    config.write_text('[runtime]\ndevice = "cpu"\n\n[queues.colorize]\ntask = "colorize"\n')
    r = check_child(config, service_env)
    assert r.returncode == 78
    assert f"{config}:4: [queues.colorize] model: missing" in r.stderr


def test_missing_model_folder_exits_78_in_a_real_child(tmp_path, tiny_models, service_env):
    config = write_config(tmp_path, {"colorize": tmp_path / "models" / "nowhere"})
    r = check_child(config, service_env)
    assert r.returncode == 78
    assert "[queues.colorize] model: cannot load the model" in r.stderr
    assert "nowhere: model folder not found" in r.stderr


def test_good_config_exits_0_with_a_summary(tmp_path, tiny_models, service_env):
    config = write_config(tmp_path, tiny_models)
    r = check_child(config, service_env)
    assert r.returncode == 0, r.stderr
    assert f"{config}: OK" in r.stdout
    assert "colorize: colorize, model" in r.stdout and "(version 1)" in r.stdout
    assert "device   cpu" in r.stdout
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "var").exists()


# Broken in ways only a look at the folders, the device or the models finds. Run in-process
# through the same CLI entry point, so torch is imported once rather than once per case.

def run_check(config, capsys) -> tuple[int, str]:
    code = cli(["check", "--config", str(config)])
    return code, capsys.readouterr().err


def test_corrupt_model_exits_78(tmp_path, tiny_models, capsys):
    model = shutil.copytree(tiny_models["colorize"], tmp_path / "models" / "colorize")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a copy cut short
    code, err = run_check(write_config(tmp_path, {"colorize": model}), capsys)
    assert code == 78
    assert "model.safetensors: not a readable safetensors file" in err


def test_model_for_another_task_exits_78(tmp_path, tiny_models, capsys):
    config = write_config(tmp_path, {"reverse": tiny_models["colorize"]})  # a translate queue, a colorize model
    code, err = run_check(config, capsys)
    assert code == 78
    assert "[queues.reverse] model" in err and "is a 'colorize' model, the queue's task is 'translate'" in err
    assert f"{config}:{line_of(config, 'model =')}:" in err


def test_unavailable_cuda_device_exits_78(tmp_path, tiny_models, capsys):
    code, err = run_check(write_config(tmp_path, tiny_models, '[runtime]\ndevice = "cuda:99"\n'), capsys)
    assert code == 78
    assert "[runtime] device: 'cuda:99' asked for, but" in err


@contextlib.contextmanager
def unwritable(folder):
    """Make folder unwritable for everyone: permissions, plus the immutable flag when we are root."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root without chattr +i: root writes through permissions")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_unwritable_outbox_exits_78(tmp_path, tiny_models, capsys):
    config = write_config(tmp_path, tiny_models)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    with unwritable(outbox):
        code, err = run_check(config, capsys)
    assert code == 78
    assert f"[paths] outbox: {outbox}: not writable" in err and "ReadWritePaths" in err


def test_outbox_that_cannot_be_created_exits_78(tmp_path, tiny_models, capsys):
    (tmp_path / "data").write_text("a file where a folder should be")
    config = write_config(tmp_path, tiny_models, '[paths]\noutbox = "data/outbox"\n')
    code, err = run_check(config, capsys)
    assert code == 78
    assert f"cannot be created: {tmp_path / 'data'} is a file" in err


def test_outbox_inside_the_inbox_exits_78(tmp_path, tiny_models, capsys):
    config = write_config(tmp_path, tiny_models, '[paths]\ninbox = "in"\noutbox = "in"\n')
    code, err = run_check(config, capsys)
    assert code == 78
    assert "[paths] outbox" in err and "overlaps the watched inbox" in err


def test_every_problem_is_reported_at_once(tmp_path, tiny_models, capsys):
    (tmp_path / "state").write_text("")
    config = write_config(tmp_path, {"colorize": tmp_path / "gone"}, '[paths]\nstate = "state"\n')
    code, err = run_check(config, capsys)
    assert code == 78
    assert "[paths] state" in err and "[queues.colorize] model" in err and "2 problem(s)" in err


def test_the_service_gets_the_same_verdict_as_an_exception(tmp_path, tiny_models):
    good = load_config(write_config(tmp_path / "good", tiny_models))
    assert validate(good) == []
    require_valid(good)
    bad = load_config(write_config(tmp_path / "bad", {"colorize": tmp_path / "gone"}))
    with pytest.raises(ConfigError) as info:  # the CLI turns any ConfigError into exit 78
        require_valid(bad)
    assert isinstance(info.value, ConfigProblems)
    assert "[queues.colorize] model: cannot load the model" in str(info.value)


def test_the_service_refuses_to_start_on_what_check_refuses(tmp_path, tiny_models, service_env):
    config = write_config(tmp_path, {"reverse": tiny_models["colorize"]})  # a translate queue, a colorize model
    r = subprocess.run([PYTHON, "-m", "daemon", "run", "--config", str(config)], env=service_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 78, r.stderr
    assert "[queues.reverse] model" in r.stderr and "is a 'colorize' model" in r.stderr
    assert not (tmp_path / "var").exists(), "nothing started"
