"""The live view of color points, as the dashboard asks for it: server time per preview against a conversion.

    python bench/preview_bench.py [--pairs DIR] [--repeat 20] [--model DIR]

Starts `reverser run` with the web on a free port and the shipped colorize
model, uploads a plate's gray half (the first pair of --pairs, or a made-up
256x384 gray picture where there are none), waits for its result, then sends
--repeat previews the way a person works: the first with no points (which
builds the picture's propagation once), then one more point each time, at the
places the simulated user of docs/color-points.md picks, with the truth's
colors (with no truth: a 5x4 grid, blue). Server time is the sum of the
answer's Server-Timing entries; round trip is what the client waited. Then,
with the service stopped, the same picture converted in-process without
points (Predictor.predict, the median of as many) is the baseline. The last
line gives the medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.hints_bench import pairs, simulated_points  # noqa: E402
from unet import Predictor  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_ms(r: httpx.Response) -> float:
    return sum(float(part.split("dur=")[1]) for part in r.headers["server-timing"].split(","))


def points_for(gray: Image.Image, truth: Image.Image | None, model: Path, n: int) -> list[dict]:
    if truth is None:
        return [{"x": (i % 5 + 0.5) / 5, "y": (i // 5 % 4 + 0.5) / 4, "color": "#2040ff"} for i in range(n)]
    auto = Predictor(model, device="cpu", max_batch=1).predict([gray])[0]
    return simulated_points(auto, truth, n)["points"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, default=ROOT.parent / "shared" / "data" / "plates" / "val")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "colorize")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    found = pairs(args.pairs, 1) if args.pairs.is_dir() else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if found:
            src, truth = tmp / found[0][0].name, Image.open(found[0][1]).convert("RGB")
            Image.open(found[0][0]).convert("L").save(src)
        else:
            src, truth = tmp / "made_before.png", None
            rng = np.random.default_rng(0)
            Image.fromarray((rng.random((384, 256)) * 80 + np.linspace(60, 180, 256)).astype(np.uint8)).save(src)
        gray = Image.open(src)
        gray.load()
        said = points_for(gray, truth, args.model, args.repeat - 1)
        port = free_port()
        (tmp / "config.toml").write_text(
            f'[paths]\ninbox = "inbox"\noutbox = "outbox"\nstate = "var"\n[runtime]\nmax_batch = 1\n'
            f'[web]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'
            f'[queues.colorize]\ntask = "colorize"\nmodel = "{args.model}"\n')
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(tmp / "config.toml")],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "log", "w"))
        server, trip = [], []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
                for _ in range(600):
                    try:
                        if c.get("/api/status").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.2)
                with open(src, "rb") as f:
                    fid = c.post("/api/queues/colorize/files", files={"file": (src.name, f)}).json()["id"]
                while c.get(f"/api/files/{fid}").json()["state"] not in ("done", "failed"):
                    time.sleep(0.2)
                first = None
                for k in range(args.repeat):
                    body = json.dumps({"points": said[:k]}) if k else ""
                    t = time.perf_counter()
                    r = c.post(f"/api/files/{fid}/preview", content=body)
                    r.raise_for_status()
                    if first is None:
                        first = server_ms(r)   # the propagation built: once per picture
                        continue
                    trip.append(1000.0 * (time.perf_counter() - t))
                    server.append(server_ms(r))
        finally:
            child.terminate()
            child.wait(60)
        predictor = Predictor(args.model, device="cpu", max_batch=1)
        plain = []
        for _ in range(args.repeat + 2):
            t = time.perf_counter()
            predictor.predict([gray])
            plain.append(1000.0 * (time.perf_counter() - t))
        base = statistics.median(plain[2:])
    med = statistics.median(server)
    print(f"first preview (builds the propagation): {first:.1f} ms server time")
    print(f"{len(server)} previews with 1 to {len(server)} points: server median {med:.1f} ms "
          f"(max {max(server):.1f}), round trip median {statistics.median(trip):.1f} ms")
    print(f"{gray.width}x{gray.height}: preview {med:.1f} ms server time, {med / base:.2f}x a conversion "
          f"in-process without points ({base:.1f} ms)")


if __name__ == "__main__":
    main()
