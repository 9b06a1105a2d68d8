"""The README's two dashboard pictures, taken in headless Chromium from a real service with the shipped models.

    python bench/web_screenshots.py [--out docs]

It starts `reverser run` on temporary folders with [web] enabled, uploads a few
of the plates' held-out befores through the API (and one torn file, so the
counts show a failure), waits for their results, and saves
docs/web-overview.png (the Overview) and docs/web-compare.png (a before/after
comparison, the slider at the middle). Needs Debian's chromium and
chromium-driver; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import PLATES, child_env  # noqa: E402

PICTURES = ["floral_12_before.jpg", "fish_22_before.jpg", "plants_330_before.jpg", "power_28_before.jpg"]


def upload(base: str, path: Path, name: str | None = None) -> str:
    boundary = "reverser-screenshots"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name or path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/api/queues/colorize/files", body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["id"]


def state(base: str, fid: str) -> dict:
    with urllib.request.urlopen(f"{base}/api/files/{fid}") as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    scratch = Path(tempfile.mkdtemp(prefix="reverser-shots-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (scratch / "config.toml").write_text(
        f'[runtime]\ndevice = "cpu"\n[retrain]\nenabled = false\n[web]\nenabled = true\nport = {port}\n'
        f'[queues.colorize]\ntask = "colorize"\nmodel = "{ROOT / "models" / "colorize"}"\n'
        f'[queues.reverse]\ntask = "translate"\nmodel = "{ROOT / "models" / "reverse"}"\n')
    log = open(scratch / "service.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", "config.toml"], cwd=scratch,
                            env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    driver = None
    try:
        while "Ready:" not in (scratch / "service.log").read_text(errors="replace"):
            if proc.poll() is not None:
                raise SystemExit((scratch / "service.log").read_text())
            time.sleep(0.2)
        ids = [upload(base, PLATES / "val" / name) for name in PICTURES]
        torn = scratch / "torn.jpg"
        torn.write_bytes(b"\xff\xd8\xff\xe0 cut short")
        ids.append(upload(base, torn, "page 7 (torn).jpg"))
        while any(state(base, i)["state"] not in ("done", "failed") for i in ids):
            time.sleep(0.5)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1100,520", "--hide-scrollbars"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=DriverService(executable_path="/usr/bin/chromedriver"), options=options)
        driver.get(base + "/")
        time.sleep(2.5)   # two polls of /api/status
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "web-overview.png"))
        driver.set_window_size(1100, 960)   # the comparison fits the window: a 256x384 plate shows at about 140%
        driver.get(f"{base}/results/{ids[0]}")
        time.sleep(2)
        driver.save_screenshot(str(args.out / "web-compare.png"))
        print(f"wrote {args.out / 'web-overview.png'} and {args.out / 'web-compare.png'}")
        for line in driver.get_log("browser"):   # a page's error would show in the picture too, or hide in it
            print(f"browser console: {line['level']} {line['message']}")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
