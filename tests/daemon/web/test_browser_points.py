"""Color points in a real headless Chromium: on a done picture's page, three clicks with a blue color make the
live view blue there, and Apply writes a full-size result, a new file, that is blue there too."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.daemon.web.test_browser import browser, shot, until  # noqa: F401 (the fixture, shared)
from tests.support.images import make_image
from tests.support.processes import ROOT

PLATES = ROOT.parent / "shared" / "data" / "plates" / "val"
BLUE = "#2040ff"


def gray_picture(web) -> Path:
    """A plate's gray half where the plates are here, else a made-up gray picture."""
    plates = sorted(PLATES.glob("*_before.*")) if PLATES.is_dir() else []
    if plates:
        with Image.open(plates[0]) as im:
            out = web.root / "src" / f"plate{plates[0].suffix}"
            out.parent.mkdir(parents=True, exist_ok=True)
            im.convert("L").save(out)
            return out
    return make_image(web.root / "src" / "made.png", (384, 256), "L", seed=11)


def mid_gray_spots(path: Path, n: int = 3) -> list[tuple[float, float]]:
    """n places, apart, where the picture is mid-gray: where blue can show (white paper cannot turn blue)."""
    with Image.open(path) as im:
        g = np.asarray(im.convert("L").resize((40, 40)), dtype=float)
    spots = []
    for y, x in zip(*np.unravel_index(np.argsort(np.abs(g - 110).ravel()), g.shape)):
        if 4 <= x < 36 and 4 <= y < 36 and all(abs(x - a) + abs(y - b) > 8 for a, b in spots):
            spots.append((x, y))
        if len(spots) == n:
            break
    return [((x + 0.5) / 40, (y + 0.5) / 40) for x, y in spots]


def blue(rgb) -> bool:
    r, g, b = rgb
    return b > r + 30 and b > g + 15


def at(rgb: np.ndarray, fx: float, fy: float) -> np.ndarray:
    h, w, _ = rgb.shape
    y, x = int(fy * h), int(fx * w)
    return rgb[max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(-1, 3).mean(0)


LIVE_PIXELS = """const img = document.querySelector('#points img.live'), c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    return arguments[0].map(([fx, fy]) => Array.from(g.getImageData(Math.floor(fx * c.width),
                                                                       Math.floor(fy * c.height), 1, 1).data).slice(0, 3));"""


def test_three_blue_points_color_the_live_view_and_then_the_full_size_result(web, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    src = gray_picture(web)
    spots = mid_gray_spots(src)
    with web.client() as c, open(src, "rb") as f:
        fid = c.post("/api/queues/colorize/files", files={"file": (src.name, f)}).json()["id"]
        assert web.wait_state(c, fid, "done", "failed")["state"] == "done"
    b = browser
    b.get(f"{web.url}/results/{fid}")
    until(b, "document.getElementById('points').dataset.state === 'ready'", "the live view")
    live = b.find_element(By.CSS_SELECTOR, "#points img.live")
    assert not any(blue(p) for p in b.execute_script(LIVE_PIXELS, spots))
    b.execute_script("arguments[0].scrollIntoView({block: 'center'})", live)
    size = live.size
    for fx, fy in spots:
        ActionChains(b).move_to_element_with_offset(live, int((fx - 0.5) * size["width"]),
                                                    int((fy - 0.5) * size["height"])).click().perform()
        # The native color dialog cannot be driven: set the new point's picker (it has the focus) as a person
        # picking blue does.
        b.execute_script("const p = document.activeElement; if (p.type !== 'color') throw 'no picker focused';"
                         "p.value = arguments[0]; p.dispatchEvent(new Event('input', {bubbles: true}));", BLUE)
    assert len(b.find_elements(By.CSS_SELECTOR, "#points .pt")) == 3
    until(b, "document.querySelectorAll('#points ol.plist li').length === 3 && "
             "document.getElementById('points').dataset.state === 'ready' && "
             "document.querySelector('#points .said').textContent.startsWith('3 points')", "the live view with 3 points")
    until(b, "document.getElementById('points').dataset.state === 'ready'", "the last change's view")
    seen = b.execute_script(LIVE_PIXELS, spots)
    assert all(blue(p) for p in seen), seen
    shot(b, "points")
    b.find_element(By.CSS_SELECTOR, "#points button.apply").click()
    until(b, "document.querySelector('#points a.applied') !== null", "the applied result", timeout=120)
    new_id = b.find_element(By.CSS_SELECTOR, "#points a.applied").get_attribute("href").rsplit("/", 1)[1]
    assert new_id != fid
    with web.client() as c:
        full = np.asarray(Image.open(io.BytesIO(c.get(f"/api/files/{new_id}/result").content)).convert("RGB"), dtype=int)
        first = np.asarray(Image.open(io.BytesIO(c.get(f"/api/files/{fid}/result").content)).convert("RGB"), dtype=int)
    with Image.open(src) as im:
        assert full.shape[1::-1] == im.size   # full size
    assert all(blue(at(full, fx, fy)) for fx, fy in spots), [at(full, fx, fy) for fx, fy in spots]
    assert not any(blue(at(first, fx, fy)) for fx, fy in spots)   # the earlier result stays as it was
    b.get(f"{web.url}/results/{new_id}")
    shot(b, "points-applied")


if not Path("/usr/bin/chromium").exists():
    pytestmark = pytest.mark.skip("Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
