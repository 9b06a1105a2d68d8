"""reverser convert: files and folders once, through the service's pipeline, as a user runs it."""

from __future__ import annotations

import subprocess

from PIL import Image

from daemon.commands.cli import main as cli
from tests.support.config import write_config
from tests.support.images import make_image
from tests.support.processes import PYTHON
from tests.support.service import names


def convert(cfg, *args, env):
    return subprocess.run([PYTHON, "-m", "daemon", "convert", "--config", str(cfg), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_folder_is_converted_beside_its_inputs_and_a_bad_file_fails_alone(tmp_path, tiny_models, service_env):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    folder = tmp_path / "photos"
    for i, size in enumerate([(64, 48), (150, 90), (33, 77)]):
        make_image(folder / f"p{i}_before.jpg", size, "L", seed=i)
    make_image(folder / "plain.png", (50, 50), "L")
    (folder / "broken_before.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    r = convert(cfg, folder, env=service_env)
    assert r.returncode == 65, r.stderr
    assert "broken_before.jpg: failed:" in r.stderr and "converted 4 of 5 file(s); 1 failed" in r.stderr
    assert "it/s" not in r.stderr and "img/s" not in r.stderr  # no progress bar when stderr is not a terminal
    assert f"{folder / 'p1_before.jpg'} -> {folder / 'p1_after.jpg'}" in r.stderr   # but a line for each success
    assert "writer may append" not in r.stderr   # no writer comes back to a file given on the command line
    assert names(folder) == sorted(["broken_before.jpg", "p0_after.jpg", "p0_before.jpg", "p1_after.jpg",
                                    "p1_before.jpg", "p2_after.jpg", "p2_before.jpg", "plain.png", "plain_after.png"])
    for i in range(3):
        with Image.open(folder / f"p{i}_after.jpg") as out, Image.open(folder / f"p{i}_before.jpg") as src:
            assert out.size == src.size and out.mode == "RGB"


def test_files_go_to_the_output_folder_and_never_replace_a_result(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    one = make_image(tmp_path / "one_before.png", (80, 60), "RGB")
    out = tmp_path / "results"
    for _ in range(2):  # in process this time: the same entry point, without a second interpreter start
        assert cli(["convert", "--config", str(cfg), "--queue", "reverse", "-o", str(out), str(one)]) == 0
        assert "converted 1 of 1 file(s)" in capsys.readouterr().err
    assert names(out) == ["one_after-1.png", "one_after.png"]
    with Image.open(out / "one_after.png") as im:
        assert im.mode == "L" and im.size == (80, 60)  # the reverse queue's model: gray out


def test_an_unknown_queue_or_missing_file_is_a_usage_error(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    assert cli(["convert", "--config", str(cfg), "--queue", "nope", str(tmp_path)]) == 64
    assert "no queue 'nope'" in capsys.readouterr().err
    assert cli(["convert", "--config", str(cfg), str(tmp_path / "missing.jpg")]) == 64
    assert "no such file" in capsys.readouterr().err


def test_run_again_with_skip_existing_converts_only_what_is_new(tmp_path, tiny_models, capsys):
    cfg = write_config(tmp_path / "cfg", tiny_models)
    folder = tmp_path / "photos"
    make_image(folder / "a_before.png", (40, 30), "L")
    assert cli(["convert", "--config", str(cfg), str(folder)]) == 0
    make_image(folder / "b_before.png", (40, 30), "L", seed=2)
    capsys.readouterr()
    assert cli(["convert", "--config", str(cfg), "--skip-existing", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "1 input(s) skipped: their result is there already" in err and "converted 1 of 1 file(s)" in err
    assert names(folder) == ["a_after.png", "a_before.png", "b_after.png", "b_before.png"]   # no a_after-1.png
    assert cli(["convert", "--config", str(cfg), "--skip-existing", str(folder)]) == 0   # nothing new: done
