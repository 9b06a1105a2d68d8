"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium with the
driver's path given, so nothing is downloaded): open it, upload a file through the page, see its result, compare
before and after, retry a failed file. Screenshots go to .pytest_cache/web/ for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.images import make_image
from tests.support.processes import ROOT
from tests.support.service import wait_for

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = ROOT / ".pytest_cache" / "web"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(executable_path=str(DRIVER)), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def until(driver, js: str, what: str, timeout: float = 60):
    """Wait until a JavaScript expression is true in the page."""
    return wait_for(lambda: driver.execute_script(f"return {js}"), timeout, what, every=0.1)


def test_upload_through_the_page_see_the_result_and_compare(web, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = browser
    b.get(web.url + "/")
    assert b.title.startswith("Overview")
    assert b.find_element(By.CSS_SELECTOR, 'tr[data-q="colorize"] th').text == "colorize"
    src = make_image(web.root / "src" / "page upload.png", (240, 160), "L", seed=3)
    b.get(web.url + "/upload")
    b.find_element(By.ID, "files").send_keys(str(src))
    until(b, "document.querySelector('#uploads tr.done, #uploads tr.failed') !== null", "the upload to finish")
    row = b.find_element(By.CSS_SELECTOR, "#uploads tbody tr")
    assert "done" in row.get_attribute("class"), row.text
    assert "page_upload_after.png" in row.text
    until(b, "document.querySelector('#uploads img.thumb').naturalWidth > 0", "the result's thumbnail")
    shot(b, "upload")
    # The Overview counts it (live, from /api/status).
    b.get(web.url + "/")
    until(b, "Number(document.querySelector('tr[data-q=colorize] [data-k=processed]').textContent) >= 1",
          "the overview to count the file")
    shot(b, "overview")
    # Results: the pair as thumbnails; opening it compares both at full size.
    b.get(web.url + "/results")
    assert "page_upload_after.png" in b.page_source
    until(b, "[...document.images].every(i => i.complete && i.naturalWidth > 0)", "the thumbnails")
    shot(b, "results")
    b.find_element(By.CSS_SELECTOR, ".grid a.pair").click()
    until(b, "document.querySelector('img.before').naturalWidth === 240 && "
             "document.querySelector('img.after').naturalWidth === 240", "both images at full size")
    clip = lambda: b.execute_script("return document.getElementById('clip').getBoundingClientRect().width")
    whole = b.execute_script("return document.getElementById('compare').getBoundingClientRect().width")
    assert abs(clip() - whole / 2) <= 2
    slider = b.find_element(By.ID, "slider")
    for _ in range(20):
        slider.send_keys(Keys.ARROW_LEFT)
    assert clip() < whole / 2 - 20
    shot(b, "compare")
    b.find_element(By.ID, "toggle").click()
    assert clip() in (0, whole)


def test_a_failed_file_is_shown_with_its_reason_and_retried(web, browser):
    from selenium.webdriver.common.by import By

    b = browser
    torn = web.root / "src" / "torn scan.jpg"
    torn.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    b.get(web.url + "/upload")
    b.find_element(By.ID, "files").send_keys(str(torn))
    until(b, "document.querySelector('#uploads tr.failed') !== null", "the upload to fail")
    assert "cannot decode image" in b.find_element(By.CSS_SELECTOR, "#uploads tr.failed").text
    b.get(web.url + "/failed")
    row = b.find_element(By.XPATH, "//tr[td[1][text()='torn_scan_before.jpg']]")
    assert "cannot decode image" in row.find_element(By.CSS_SELECTOR, ".reason").text
    shot(b, "failed")
    # A person puts a good copy in its place, then presses Retry: it goes through the inbox again.
    shutil.copy(make_image(web.root / "src" / "fixed.jpg", (64, 48), "L"), web.folder("failed") / "torn_scan_before.jpg")
    row.find_element(By.XPATH, ".//button[text()='Retry']").click()
    assert "torn_scan_before.jpg is back in the colorize inbox" in b.find_element(By.CSS_SELECTOR, ".flash").text
    wait_for(lambda: (web.folder("outbox") / "torn_scan_after.jpg").exists(), 60, "the retried file's result",
             log=web.service.log)
    b.get(web.url + "/failed")
    assert "torn_scan_before.jpg" not in b.page_source
    b.get(web.url + "/results")
    assert "torn_scan_after.jpg" in b.page_source


def test_models_and_training_pages_show_the_registry(web, browser):
    from selenium.webdriver.common.by import By

    b = browser
    b.get(web.url + "/models")
    champion = b.find_element(By.CSS_SELECTOR, "table.models tr.champion")
    assert "★" in champion.text and "champion" in champion.text
    b.find_element(By.XPATH, "//button[text()='Roll back the champion']").click()
    assert "first of its line" in b.find_element(By.CSS_SELECTOR, ".flash").text   # the registry's rule, said
    shot(b, "models")
    b.get(web.url + "/training")
    assert "pairs filed" in b.page_source and "Train now" in b.page_source
    shot(b, "training")
