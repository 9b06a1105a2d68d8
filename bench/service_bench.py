"""The service end to end: a real `reverser run` child on temporary folders, against the network alone and a naive loop.

    python bench/service_bench.py [--queue colorize] [--images 300] [--latency 20] [--naive 40] [--device auto]

Figures, all on the same model, device and generated 1024x1536 JPEG befores:

- end to end: the images are renamed into the running service's inbox at once;
  images/s from the first rename to the last result written.
- forward only: the network alone at the batch size the service chose
  (max_batch = "auto" unless --max-batch is given), at the working size of a
  1024x1536 image. efficiency = end to end / forward only.
- naive: one process, one file at a time: open, resize, forward at batch 1,
  recombine, save. speed-up = end to end / naive.
- latency: single files renamed into the idle service one at a time; time
  from the rename to the result appearing, p50 and p95, beside the model's
  own time for one image.

It uses the shipped model in models/<queue> when there is one, else a freshly
initialised network of the shipped architecture (unet.recipe), and says which.
Given --model twice or more, it measures each model folder in turn on the same
machine in one run, and prints each one's end-to-end rate against the first's.

    python bench/service_bench.py --web-poll [--images 40] [--web-rounds 3]

--web-poll measures what the web dashboard costs: the service runs with [web]
enabled, and the end-to-end measurement is made in rounds, alternately without
a page and with a page polling /api/status every second (as the Overview does),
in one run of one service; it prints both medians and their ratio (the other
figures are skipped).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.conversion.converting.autobatch import on_a_thread  # noqa: E402
from tests.support.images import make_image  # noqa: E402
from unet import Predictor, load_model, new_model, open_image, save_model  # noqa: E402
from unet.checkpoint import CheckpointError  # noqa: E402
from unet.recipe import recipe  # noqa: E402

SIZE = (1024, 1536)   # width, height: a portrait scan


def pick_model(queue: str, scratch: Path) -> tuple[Path, str]:
    """The shipped model folder, or a fresh one of the default architecture saved in scratch."""
    shipped = ROOT / "models" / queue
    try:
        load_model(shipped)
        return shipped, f"shipped model {shipped.relative_to(ROOT)}"
    except CheckpointError as e:
        reason = str(e).split(";")[0].replace(str(ROOT) + os.sep, "")
    task, arch = recipe("colorize") if queue == "colorize" else recipe("translate", gray_output=True)
    torch.manual_seed(0)
    folder = save_model(new_model(task, arch), scratch / "model" / queue, version=1)
    return folder, (f"a freshly initialised model of the shipped architecture, unet.recipe (no shipped model: "
                    f"{reason}); speed does not depend on the weights")


def make_inputs(folder: Path, n: int, mode: str, size: tuple[int, int] = SIZE) -> list[Path]:
    """n JPEG befores of size (width, height): a few distinct pictures, copied (content does not change the speed)."""
    folder.mkdir(parents=True)
    distinct = []
    for i in range(min(n, 8)):
        buf = io.BytesIO()
        src = make_image(folder / f".src{i}.png", size, mode, seed=i)
        Image.open(src).save(buf, "JPEG", quality=90)
        src.unlink()
        distinct.append(buf.getvalue())
    paths = []
    for i in range(n):
        p = folder / f"img{i:04d}_before.jpg"
        p.write_bytes(distinct[i % len(distinct)])
        paths.append(p)
    return paths


def start_service(cfg: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "Ready:" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc


def wait_until(cond, timeout: float, every: float = 0.002) -> float:
    """Poll cond(); return the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the service")
        time.sleep(every)
    return time.monotonic()


def forward_rate(pred: Predictor, item, batch: int, seconds: float = 4.0) -> float:
    """Images/s of the network alone at this batch size, for one prepared item (a 1024x1536 image)."""
    pred.run([item] * batch)  # warm-up
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t = time.perf_counter()
        pred.run([item] * batch)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def naive_rate(pred: Predictor, paths: list[Path], out: Path) -> float:
    """One file at a time: open, resize, forward at batch 1, recombine, save."""
    out.mkdir()
    t = time.perf_counter()
    for p in paths:
        src = open_image(p)
        prepared = pred.prepare(src)
        y = pred.run([prepared])[0]
        pred.finish(prepared, y).save(out / p.name.replace("_before", "_after"), quality=92)
    return len(paths) / (time.perf_counter() - t)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queue", choices=["colorize", "reverse"], default="colorize")
    ap.add_argument("--images", type=int, default=300, help="befores dropped at once")
    ap.add_argument("--latency", type=int, default=20, help="single files dropped into the idle service")
    ap.add_argument("--naive", type=int, default=40, help="files for the naive loop (a sample of the same inputs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-batch", default="auto")
    ap.add_argument("--torch-threads", type=int, default=0, help="runtime.torch_threads (0: torch's default)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (and the service log)")
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="a model folder to measure instead of the shipped one; twice or more: each in turn")
    ap.add_argument("--web-poll", action="store_true",
                    help="with [web] on: end to end without and with a page polling /api/status every second")
    ap.add_argument("--web-rounds", type=int, default=3, help="rounds of each for --web-poll")
    args = ap.parse_args()

    rates = []
    for model in args.model or [None]:
        scratch = Path(tempfile.mkdtemp(prefix="reverser-bench-"))
        try:
            rates.append((model, run(args, scratch, model)))
        finally:
            if args.keep:
                print(f"kept {scratch}")
            else:
                shutil.rmtree(scratch, ignore_errors=True)
    if len(rates) > 1:
        base = rates[0][1]
        print("\nend to end, side by side in this run:")
        for model, rate in rates:
            print(f"  {model}: {rate:.2f} images/s, {rate / base:.2f}x the first")


def run(args, scratch: Path, model: Path | None = None) -> float:
    """One model through the service; returns its end-to-end images/s."""
    mode = "L" if args.queue == "colorize" else "RGB"
    if model is None:
        model, which = pick_model(args.queue, scratch)
    else:
        model, which = model.resolve(), f"model folder {model}"
    cpu = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__} ({args.torch_threads or torch.get_num_threads()} threads); {cpu}; {gpu}\n"
          f"queue {args.queue}: {which}")

    task = "colorize" if args.queue == "colorize" else "translate"
    max_batch = '"auto"' if args.max_batch == "auto" else int(args.max_batch)
    cfg = scratch / "config.toml"
    port = free_port()
    cfg.write_text(f'[runtime]\ndevice = "{args.device}"\nmax_batch = {max_batch}\n'
                   f'torch_threads = {args.torch_threads}\n'
                   + (f'[web]\nenabled = true\nport = {port}\n' if args.web_poll else "")
                   + f'[retrain]\nenabled = false\n[queues.{args.queue}]\ntask = "{task}"\nmodel = "{model}"\n')
    inbox, outbox = scratch / "inbox" / args.queue, scratch / "outbox" / args.queue
    log = scratch / "service.log"
    if args.web_poll:
        return web_poll(args, scratch, cfg, log, inbox, outbox, mode, f"http://127.0.0.1:{port}/api/status")

    stage = scratch / "stage"
    t = time.perf_counter()
    paths = make_inputs(stage, args.images + args.latency, mode)
    print(f"generated {len(paths)} {SIZE[0]}x{SIZE[1]} JPEG befores in {time.perf_counter() - t:.0f} s")
    proc = start_service(cfg, log)
    try:
        status = json.loads((scratch / "var" / "status.json").read_text())
        device, q = status["device"], status["queues"][args.queue]
        batch, why = q["max_batch"], q["batch_reason"]
        print(f"service: device {device}, batch size {batch} ({why})")

        # Latency: one file at a time into an idle service.
        lat = []
        for p in paths[args.images:]:
            t0 = time.monotonic()
            os.rename(p, inbox / p.name)
            out = outbox / p.name.replace("_before", "_after")
            lat.append(wait_until(out.exists, 120) - t0)
            time.sleep(0.2)  # idle again

        # Throughput: everything at once.
        bulk = paths[:args.images]
        t0 = time.monotonic()
        for p in bulk:
            os.rename(p, inbox / p.name)
        results = lambda: sum(1 for e in os.scandir(outbox) if e.name.endswith("_after.jpg"))  # noqa: E731
        seen = len(log.read_text())
        t1 = wait_until(lambda: results() >= len(bulk) + args.latency, 3600, every=0.02)
        end_to_end = len(bulk) / (t1 - t0)
        # The service's own batch timings during the bulk run: the model's busy share of the wall time.
        batches = [(int(n), float(ms)) for n, ms in
                   re.findall(r"batch: (\d+) x \S+ at \S+ on \S+ in (\d+) ms", log.read_text()[seen:])]
        busy = sum(ms for _, ms in batches) / 1000 / (t1 - t0)
        in_service = sum(n for n, _ in batches) / max(sum(ms for _, ms in batches) / 1000, 1e-9)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)

    service_ms = [float(x) for x in re.findall(r"_after\.jpg in (\d+) ms", log.read_text())]
    # The network alone, before and after the naive loop: on a shared machine the load drifts.
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    pred = Predictor(model, device=args.device)
    sample = [scratch / "var" / "done" / args.queue / p.name for p in bulk[:args.naive]]
    item = pred.prepare(open_image(sample[0]))
    # On a thread, as the service's batcher runs the model (see daemon/autobatch.on_a_thread).
    fwd_a = on_a_thread(forward_rate, pred, item, batch)
    naive = on_a_thread(naive_rate, pred, sample, scratch / "naive")
    fwd_b = on_a_thread(forward_rate, pred, item, batch)
    fwd = (fwd_a + fwd_b) / 2
    fwd1 = on_a_thread(forward_rate, pred, item, 1) if batch != 1 else fwd
    h, w = item.key

    print(f"\nresults ({args.queue}, {SIZE[0]}x{SIZE[1]} JPEG, working size {w}x{h}, device {device}, batch {batch}):")
    print(f"  end to end, {len(bulk)} files at once:  {end_to_end:7.2f} images/s")
    print(f"  forward only at batch {batch}:          {fwd:7.2f} images/s   efficiency {end_to_end / fwd:.2f}"
          f"   (measured twice: {fwd_a:.2f}, {fwd_b:.2f})")
    print(f"  the model inside the service:       {in_service:7.2f} images/s   busy {100 * busy:.0f}% of the bulk "
          f"run's wall time")
    print(f"  naive loop, {len(sample)} files:            {naive:7.2f} images/s   service is {end_to_end / naive:.2f}x")
    print(f"  latency, {len(lat)} single files:          p50 {1000 * percentile(lat, .5):.0f} ms, "
          f"p95 {1000 * percentile(lat, .95):.0f} ms (rename to result visible); "
          f"model time for one image {1000 / fwd1:.0f} ms")
    if service_ms:
        single = service_ms[:len(lat)]
        print(f"  service's own figure for those files (complete to written): p50 {percentile(single, .5):.0f} ms, "
              f"p95 {percentile(single, .95):.0f} ms")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    return end_to_end


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(url: str, stop: threading.Event, took: list[float]) -> None:
    """A dashboard page left open: GET /api/status every second, as the Overview's script does."""
    while not stop.is_set():
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
        took.append(time.perf_counter() - t)
        stop.wait(max(0.0, 1.0 - (time.perf_counter() - t)))


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system, all its threads)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def web_poll(args, scratch: Path, cfg: Path, log: Path, inbox: Path, outbox: Path, mode: str, url: str) -> float:
    """End to end in alternating rounds, without and with a page polling; returns the rate with the page.
    Beside the wall-clock rate, the service's own CPU time per image, which a loaded machine disturbs less."""
    proc = start_service(cfg, log)
    outbox.mkdir(parents=True, exist_ok=True)
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    took: list[float] = []
    try:
        status = json.loads((scratch / "var" / "status.json").read_text())
        q = status["queues"][args.queue]
        print(f"service: device {status['device']}, batch size {q['max_batch']} ({q['batch_reason']}); web on, "
              f"{args.images} files a round")
        for r in range(args.web_rounds):
            for polled in (False, True) if r % 2 == 0 else (True, False):   # alternate which goes first
                tag = f"r{r}{'p' if polled else 'q'}-"
                paths = make_inputs(scratch / tag, args.images, mode)
                stop = threading.Event()
                poller = threading.Thread(target=poll, args=(url, stop, took), daemon=True)
                if polled:
                    poller.start()
                t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
                for p in paths:
                    os.rename(p, inbox / (tag + p.name))
                t1 = wait_until(lambda: sum(1 for e in os.scandir(outbox) if e.name.startswith(tag))
                                >= len(paths), 3600, every=0.02)
                cpu[polled].append((cpu_seconds(proc.pid) - c0) / len(paths))
                stop.set()
                if polled:
                    poller.join()
                rates[polled].append(len(paths) / (t1 - t0))
                print(f"  round {r + 1}, {'with' if polled else 'without'} the page: "
                      f"{rates[polled][-1]:.2f} images/s, service CPU {1000 * cpu[polled][-1]:.1f} ms/image")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    c_off, c_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"\nweb dashboard ({args.queue}, {SIZE[0]}x{SIZE[1]} JPEG, {args.web_rounds} rounds of each):")
    print(f"  end to end without a page:              {off:7.2f} images/s (median), service CPU "
          f"{1000 * c_off:.1f} ms/image")
    print(f"  with a page polling /api/status at 1 Hz: {on:7.2f} images/s (median); ratio {on / off:.3f}; "
          f"service CPU {1000 * c_on:.1f} ms/image, ratio {c_on / c_off:.3f}")
    print(f"  /api/status answered in p50 {1000 * percentile(took, .5):.1f} ms, p95 "
          f"{1000 * percentile(took, .95):.1f} ms ({len(took)} polls)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    return on


if __name__ == "__main__":
    main()
