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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(executable_path=str(DRIVER)), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    """Save a screenshot; the page so far logged no error (a script, a style or the icon refused by the CSP, a 404)."""
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def until(driver, js: str, what: str, timeout: float = 60):
    """Wait until a JavaScript expression is true in the page."""
    return wait_for(lambda: driver.execute_script(f"return {js}"), timeout, what, every=0.1)


def shown(driver) -> list[str]:
    """Which picture of the comparison is seen at 10%, 30%, 70% and 90% across it."""
    return driver.execute_script("""const r = document.getElementById('compare').getBoundingClientRect();
        return [.1, .3, .7, .9].map(f => document.elementFromPoint(r.left + f * r.width, r.top + r.height / 2)
                                           .className);""")


def test_upload_through_the_page_see_the_result_and_compare(web, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    b = browser
    b.get(web.url + "/")
    assert b.title.startswith("Overview")
    assert b.find_element(By.CSS_SELECTOR, 'tr[data-q="colorize"] th').text == "colorize"
    b.get(web.url + "/results")   # nothing yet: the page says where files go
    assert f"No results yet: drop NAME_before.jpg into {web.folder('inbox')}/ or use Upload" in \
        b.find_element(By.TAG_NAME, "main").text
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
    # The input shows left of the divider and the result right of it, as the slider's ends are labelled.
    assert shown(b) == ["before", "before", "after", "after"]
    slider, toggle = b.find_element(By.ID, "slider"), b.find_element(By.ID, "toggle")
    for _ in range(25):
        slider.send_keys(Keys.ARROW_RIGHT)   # toward "after": more of the result
    assert shown(b) == ["before", "after", "after", "after"]
    shot(b, "compare")
    assert toggle.text == "Show the after"
    toggle.click()
    assert shown(b) == ["after"] * 4 and toggle.text == "Show the before"
    toggle.click()
    assert shown(b) == ["before"] * 4
    box = b.find_element(By.ID, "compare")   # dragging across the picture puts the divider under the pointer
    ActionChains(b).move_to_element_with_offset(box, box.size["width"] * 3 // 10, 0).click_and_hold().release() \
        .perform()   # 30% right of the middle: 80% across
    assert shown(b) == ["before", "before", "before", "after"]
    # The 240 px picture is scaled up to use the page; the links show it pixel for pixel.
    assert box.size["width"] > 240 * 1.5
    assert "240×160 px" in b.find_element(By.CSS_SELECTOR, "p.scale").text
    b.find_element(By.LINK_TEXT, "after at 100%").click()
    until(b, "document.images[0].naturalWidth === 240 && document.images[0].width === 240", "the result at 100%")


def test_files_dragged_onto_the_upload_page_are_sent(web, browser):
    """A drop of two files on the drop zone, as a file manager's drag gives it: real File objects, which a
    hidden file input takes from disk, in the DataTransfer of a drop event."""
    from selenium.webdriver.common.by import By

    b = browser
    sources = [make_image(web.root / "src" / f"dragged {i}.png", (96, 64), "L", seed=10 + i) for i in range(2)]
    b.get(web.url + "/upload")
    picked = b.execute_script("""const i = document.createElement('input'); i.type = 'file'; i.multiple = true;
        i.id = 'dragged'; i.style.display = 'none'; document.body.append(i); return i;""")
    picked.send_keys("\n".join(str(p) for p in sources))
    b.execute_script("""const dt = new DataTransfer();
        for (const f of document.getElementById('dragged').files) dt.items.add(f);
        const zone = document.getElementById('drop');
        zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
        if (!zone.classList.contains('over')) throw new Error('the zone does not show the drag');
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));""")
    until(b, "document.querySelectorAll('#uploads tr.done, #uploads tr.failed').length === 2", "both uploads")
    rows = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#uploads tbody tr")]
    assert all("done" in r for r in rows), rows
    for name in ("dragged_0_after.png", "dragged_1_after.png"):
        assert sum(name in r for r in rows) == 1, (name, rows)
    assert "over" not in b.find_element(By.ID, "drop").get_attribute("class")
    shot(b, "dropped")
    for name in ("dragged_0_after.png", "dragged_1_after.png"):
        assert (web.folder("outbox") / name).exists(), name


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
    until(b, "document.querySelector('.flash') !== null", "the retry's answer")
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
    # The shipped model has no parent: the page says so rather than offer a button that can only be refused.
    assert "is the first of its line: nothing to roll back to" in b.page_source
    assert not b.find_elements(By.XPATH, "//button[starts-with(text(), 'Roll back')]")
    shot(b, "models")
    b.get(web.url + "/training")
    until(b, "document.querySelector('main') !== null", "the training page")   # a busy machine parses slowly
    assert "pairs filed" in b.page_source and "Train now" in b.page_source
    assert f"drop NAME_before.jpg and NAME_after.jpg into {web.folder('inbox')}/train/, or color photos" in \
        b.find_element(By.TAG_NAME, "main").text   # no pairs yet: where they go
    shot(b, "training")
