"""max_batch = "auto": the choice rule (a kept choice wins unless clearly beaten), and the choice kept in the
state folder and read back across two real starts: the first measures before Ready, with its figures on one
short line; the second takes the kept choice at once and measures again once idle."""

from __future__ import annotations

import json
import re

from daemon.conversion.converting import autobatch
from daemon.conversion.converting.autobatch import choose
from tests.support.pairs import tiny_champion
from tests.support.rig import Rig, poll


def test_a_kept_choice_wins_unless_another_size_is_clearly_faster():
    rates = {1: 30.0, 2: 31.0, 4: 32.5, 8: 29.0}
    assert choose(rates, None)[0] == 2            # fresh: the smallest within 5% of the best (32.5)
    assert choose(rates, 1) == (1, "1 kept")                            # 32.5 is 8% over 30
    assert choose(rates, 8) == (2, "2: >10% over kept 8")               # 32.5 is 12% over 29
    assert choose(rates, 16)[0] == 2              # the kept size was not measured this time
    assert choose({1: 10.0, 2: 11.5}, 1)[0] == 2 and choose({1: 10.0, 2: 10.9}, 1)[0] == 1


def test_the_choice_is_kept_in_the_state_folder_and_read_back_at_the_next_start(tmp_path, service_env):
    rig = Rig(tmp_path / "svc", {"colorize": tiny_champion(tmp_path / "shipped" / "colorize")}, service_env,
              '[runtime]\nmax_batch = "auto"\n')
    kept = rig.cfg.paths.state / autobatch.KEPT_FILE
    try:
        rig.start()
        line = poll(lambda: re.search(r"queue colorize: (images/s by size .*)", rig.log()), 30,
                    "the figures line", rig)
        assert len(line.group(0)) <= 100 and re.search(r"; (\d+) chosen$", line.group(1)), line.group(0)
        first = int(re.search(r"; (\d+) chosen$", line.group(1)).group(1))
        (key, entry), = json.loads(kept.read_text()).items()
        assert entry["batch"] == first and "cpu colorize" in key and len(entry["images_per_s"]) >= 3
        # Kept as another measured size (say, by a start on a quieter day): the next start takes it at once,
        # Ready without measuring, and measures again once idle, keeping it unless another is over 10% faster.
        other = max(int(k) for k in entry["images_per_s"] if int(k) != first)
        entry["batch"] = other
        kept.write_text(json.dumps({key: entry}))
        rig.stop()
        rig.start()
        before_ready = rig.current.log().split("Ready:")[0]
        assert f"batch size {other} (kept)" in before_ready and "images/s by size" not in before_ready
        again = poll(lambda: re.search(r"queue colorize: batch size (\d+), measured again while idle: "
                                       r"(images/s by size .*)", rig.current.log()), 60, "the measuring when idle", rig)
        assert again.group(2).endswith((f"; {other} kept", f"over kept {other}")), again.group(0)
        chosen = int(again.group(1))
        assert json.loads(kept.read_text())[key]["batch"] == chosen
        status = rig.cfg.paths.state / "status.json"
        poll(lambda: json.loads(status.read_text())["queues"]["colorize"]["max_batch"] == chosen, 30,
             "status.json to show the size in use", rig)
        # Stopped while it may be measuring again (a third start, at once): a clean exit, never an abort.
        rig.stop()
        rig.start()
        assert rig.stop() == 0, rig.current.log()[-2000:]
    finally:
        rig.close()


def test_a_run_over_files_takes_the_services_kept_choice_and_does_not_measure_for_a_few(tmp_path, tiny_models):
    from unet import Predictor

    predictor = Predictor(tiny_models["colorize"], device="cpu", max_batch=1)
    kept = tmp_path / autobatch.KEPT_FILE
    few = autobatch.for_files(predictor, 3, kept)
    assert few.size == 1 and "too few to measure" in few.why and not kept.exists()
    autobatch._keep(kept, autobatch._key(predictor), 4, {1: 10.0, 4: 12.0})   # as a service's start keeps it
    assert autobatch.for_files(predictor, 3, kept).size == 4
    assert autobatch.for_files(predictor, 500, kept).size == 4                # kept: not measured again
