"""Config faults while running: SIGHUP with a broken config keeps the running config and logs why."""

from __future__ import annotations

import signal
import time

from tests.support.images import make_image
from tests.support.rig import Rig, poll


def test_sighup_with_a_broken_config_keeps_the_running_one_and_says_why(tmp_path, tiny_models, service_env,
                                                                        record):
    rig = Rig(tmp_path, {"colorize": tiny_models["colorize"]}, service_env, '[output]\nformat = "png"\n')
    good = rig.cfg_path.read_text()
    broken = [
        ("not TOML at all", "[runtime\ndevice = cpu\n", "not valid TOML"),
        ("an unknown key", good.replace("[watch]", "[watch]\nsettle_secs = 1"), "settle_secs"),
        ("a value out of range", good.replace("max_batch = 4", "max_batch = 0"), "max_batch"),
        ("an unknown task", good.replace('task = "colorize"', 'task = "sharpen"'), "task"),
        ("a device that is not there", good.replace('device = "cpu"', 'device = "cuda:99"'), "[runtime] device"),
        ("no queues", "\n".join(l for l in good.splitlines() if "queues" not in l and "task" not in l
                                and "model" not in l), "no queues"),
        ("the file deleted", None, "file not found"),
    ]
    t0 = time.monotonic()
    try:
        rig.start()
        for i, (what, text, words) in enumerate(broken, 1):
            if text is None:
                rig.cfg_path.unlink()
            else:
                rig.cfg_path.write_text(text)
            rig.current.send(signal.SIGHUP)
            rig.current.wait_log("Reload refused", 60, count=i)
            refusal = rig.log().split("Reload refused")[i].splitlines()[0]
            assert words in refusal, f"{what}: the refusal does not say why: {refusal}"
            assert rig.alive()
            # The running configuration is still in force: results are PNG whatever the input.
            make_image(rig.inbox() / f"still{i}_before.jpg", (48, 32), "L", seed=i)
            poll(lambda: (rig.outbox() / f"still{i}_after.png").exists(), 60, f"still{i} converted as PNG", rig)
        rig.cfg_path.write_text(good.replace('format = "png"', 'format = "jpeg"'))
        rig.current.send(signal.SIGHUP)
        rig.current.wait_log("Reloaded", 60)
        make_image(rig.inbox() / "fixed_before.png", (48, 32), "L")
        poll(lambda: (rig.outbox() / "fixed_after.jpg").exists(), 60, "the fixed config in force", rig)
        assert rig.stop() == 0
    finally:
        rig.close()
    record("config faults: SIGHUP with a broken config", f"{len(broken)} configs", 0, 0, rig.peak_kb,
           time.monotonic() - t0)
