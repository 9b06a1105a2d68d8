"""The parts of bench/retrain_bench.py: the machine, the models and pairs, and the service it runs."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.eval_pairs import contact_sheet  # noqa: E402
from bench.service_bench import wait_until  # noqa: E402
from unet import Predictor, load_model  # noqa: E402
from unet.data import load_pair  # noqa: E402
from unet.scores import evaluate  # noqa: E402

QUEUE = "colorize"
DROP_SIZE = (256, 384)    # width, height of the generated befores
WARM_UP = 8               # files through the service before the first timed batch
# The service's log: "2026-11-25 15:31:11.123 INFO    message".
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \S+\s+(.*)$", re.M)
# The training child's log (train.log): "15:31:11 message". Its time budget starts between the
# "training colorize on N pairs" line and the first evaluation's "start:" line; the loop follows.
BUDGET_FROM = re.compile(r"^(\d\d:\d\d:\d\d) training \S+ on \d+ pairs", re.M)
LOOP_START = re.compile(r"^(\d\d:\d\d:\d\d) start: val loss", re.M)
# The first line after the training loop: the decoding knob's calibration (bins / blend heads),
# or the final full-size validation (regression head).
LOOP_END = re.compile(r"^(\d\d:\d\d:\d\d) (?:(?:temperature|blend) [-\d.]+ \(colorfulness|validation: )", re.M)
SCORE_KEYS = ("psnr", "colorfulness", "truth_colorfulness", "gray_psnr", "tint_psnr", "pairs")


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


# -- the machine ---------------------------------------------------------------------------------

def machine() -> dict:
    info = {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": None, "memory_gib": None, "gpu": None, "torch": torch.__version__,
            "python": platform.python_version(), "system": platform.platform(terse=True)}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, TypeError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def describe_machine(m: dict) -> str:
    return (f"{m['cpus']} CPU(s) ({m['cpu_model'] or 'model unknown'}), {m['memory_gib']} GiB, "
            f"{m['gpu'] or 'no GPU'}; torch {m['torch']}, Python {m['python']}")


def child_clock(hms: str, near: datetime) -> datetime:
    """A train.log time of day (HH:MM:SS) as the datetime nearest to near (the job's start)."""
    t = datetime.combine(near.date(), datetime.strptime(hms, "%H:%M:%S").time())
    return min((t + timedelta(days=d) for d in (-1, 0, 1)), key=lambda c: abs((c - near).total_seconds()))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc/<pid>/stat; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- models and pairs ----------------------------------------------------------------------------

def score(model_dir: Path, pairs) -> dict:
    """Full-size scores on pairs, as bench/eval_pairs.py prints them."""
    t = time.monotonic()
    scores = evaluate(load_model(model_dir), pairs).as_dict()
    out = {k: round(scores[k], 3) if isinstance(scores[k], float) else scores[k] for k in SCORE_KEYS if k in scores}
    say(f"  {model_dir}: PSNR {out['psnr']:.2f} dB, colorfulness {out['colorfulness']:.1f} "
        f"(truth {out['truth_colorfulness']:.1f}) on {out['pairs']} pairs, in {time.monotonic() - t:.0f} s")
    return out


def sheet(path: Path, pairs, models: dict[str, Path], rows: int = 6) -> None:
    """before / each model / truth for a few --val pairs (bench/eval_pairs.py's contact sheet)."""
    predictors = {label: Predictor(load_model(m), device="cpu") for label, m in models.items()}
    step = max(1, len(pairs) // rows)
    columns = []
    for p in pairs[::step][:rows]:
        before, after = load_pair(p)
        columns.append([before] + [pred.predict([before])[0] for pred in predictors.values()] + [after])
    contact_sheet(columns, ["before", *predictors, "truth"]).save(path)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


# -- the service ---------------------------------------------------------------------------------

def cron_at(t: datetime) -> str:
    """A crontab line that fires once, at t's minute (day and month pinned)."""
    return f"{t.minute} {t.hour} {t.day} {t.month} *"


def config_text(work: Path, args, cron: str, min_new: int) -> str:
    q = json.dumps
    return f"""# Written by bench/retrain_bench.py.
[paths]
inbox = {q(str(work / "inbox"))}
outbox = {q(str(work / "outbox"))}
state = {q(str(work / "var"))}

[runtime]
device = {q(args.device)}
max_batch = {q(args.max_batch) if args.max_batch == "auto" else int(args.max_batch)}
torch_threads = {args.torch_threads}

[retrain]
enabled = true
cron = {q(cron)}
min_new_pairs = {min_new}
max_minutes = {args.minutes:g}
threads = {args.threads}
nice = {args.nice}

[queues.{QUEUE}]
task = "colorize"
model = {q(str(args.base.resolve()))}
base_pairs = [{q(str(args.base_pairs.resolve()))}]
"""


def write_config(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Log:
    """The service's log file, read from an offset onwards."""

    def __init__(self, path: Path):
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def mark(self) -> int:
        return len(self.text())

    def lines(self, since: int = 0) -> list[tuple[str, str]]:
        """(time, message) of each line after offset since."""
        return LOG_LINE.findall(self.text()[since:])

    def find(self, pattern: str, since: int = 0) -> re.Match | None:
        for when, msg in self.lines(since):
            m = re.search(pattern, msg)
            if m:
                return m
        return None

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])


def wait(cond, timeout: float, what: str, log: Log | None = None, every: float = 0.2):
    """bench/service_bench.py's wait_until with a message that says what was awaited; returns cond()'s value."""
    box = {}

    def check():
        box["v"] = cond()
        return box["v"]

    try:
        wait_until(check, timeout, every)
    except SystemExit:
        tail = f"\n--- service log (tail) ---\n{log.tail()}" if log else ""
        raise SystemExit(f"timed out after {timeout:g} s waiting for {what}{tail}") from None
    return box["v"]


def drop(files: list[Path], prefix: str, inbox: Path, outbox: Path) -> dict:
    """Rename files into the inbox at once; images/s until every result exists."""
    names = [f"{prefix}{i:04d}_after.jpg" for i in range(len(files))]
    t0, wall0 = time.monotonic(), time.time()
    for i, p in enumerate(files):
        os.rename(p, inbox / f"{prefix}{i:04d}_before.jpg")
    done = lambda: all((outbox / n).exists() for n in names)  # noqa: E731
    t1 = wait_until(done, 1800, every=0.02)
    return {"images": len(files), "seconds": round(t1 - t0, 3), "images_per_s": round(len(files) / (t1 - t0), 3),
            "from": datetime.fromtimestamp(wall0).isoformat(timespec="milliseconds"),
            "to": datetime.fromtimestamp(wall0 + t1 - t0).isoformat(timespec="milliseconds")}


def timed_drop(label: str, files, prefix, inbox, outbox, service_pid: int, child_pid: int | None = None) -> dict:
    """drop(), with the CPU the service (and the training child) used meanwhile, in cores."""
    s0 = cpu_seconds(service_pid)
    c0 = cpu_seconds(child_pid) if child_pid else None
    r = drop(files, prefix, inbox, outbox)
    s1 = cpu_seconds(service_pid)
    r["service_cores"] = round((s1 - s0) / r["seconds"], 2) if s0 is not None and s1 is not None else None
    if child_pid:
        c1 = cpu_seconds(child_pid)
        r["training_child_cores"] = round((c1 - c0) / r["seconds"], 2) if c0 is not None and c1 is not None else None
    extra = (f", training child {r['training_child_cores']} cores" if child_pid and r["training_child_cores"]
             is not None else "")
    say(f"  {label}: {r['images']} images in {r['seconds']:.1f} s = {r['images_per_s']:.2f} images/s "
        f"(service {r['service_cores']} cores{extra}; load average {os.getloadavg()[0]:.1f})")
    return r


def stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(30)
    return proc.returncode


def status(state: Path) -> dict:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
