"""End to end in headless Debian chromium: filter by a facet, arrow down plays the next
track, "more like this" lists similar tracks within the filter.  Saves a screenshot to
``test-artifacts/web-browser.png``."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from test_search_fixtures import build_catalog

pytestmark = pytest.mark.browser

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from soundalike.web.app import create_app

    built = build_catalog(tmp_path_factory.mktemp("webcat"), per_style=3, duration_s=4.0)
    port = _free_port()
    config = uvicorn.Config(create_app(built.path), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", built
    srv.should_exit = True
    th.join(timeout=10)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        pytest.skip("needs Debian chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chrome-profile")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                "--window-size=1400,900", "--mute-audio", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations land in the console
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(fn, timeout=15.0, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - stale elements while the page re-renders
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def test_filter_keyboard_and_more_like_this(server, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, built = server
    driver.get(base + "/")
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")) == 15, what="15 tracks listed")
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, '#facets a[data-term="mood:energetic"]'),
          what="facets")
    energetic = set(built.ids["drum-loop"])

    # filter by a tag facet
    driver.find_element(By.CSS_SELECTOR, '#facets a[data-term="mood:energetic"]').click()
    rows = _wait(lambda: (r := driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")) and len(r) == 3 and r,
                 what="filtered list")
    listed = [int(r.get_attribute("data-id")) for r in rows]
    assert set(listed) == energetic
    assert driver.find_element(By.ID, "where").get_attribute("value") == "mood:energetic"

    # click the first row, then the down arrow plays the next one
    rows[0].click()
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_DOWN)
    second = f"/api/tracks/{listed[1]}/audio"
    _wait(lambda: driver.execute_script("return document.getElementById('player').src").endswith(second),
          what="player on the second track")
    t0 = _wait(lambda: driver.execute_script(
        "const p = document.getElementById('player'); return !p.paused && p.currentTime > 0 && p.currentTime;"),
        what="player playing")
    _wait(lambda: driver.execute_script("return document.getElementById('player').currentTime") > t0 + 0.2,
          what="playback advancing")
    assert driver.find_element(By.CSS_SELECTOR, f'#tracks tbody tr[data-id="{listed[1]}"]').get_attribute(
        "class") == "selected"
    # space pauses
    body.send_keys(Keys.SPACE)
    _wait(lambda: driver.execute_script("return document.getElementById('player').paused"), what="paused")

    # detail pane: spectrogram image loaded, tags listed
    _wait(lambda: driver.execute_script(
        "const i = document.getElementById('spectrogram'); return i.complete && i.naturalWidth > 100"),
        what="spectrogram image")
    assert "mood:energetic" in driver.find_element(By.ID, "track-tags").text

    # more like this, within the active filter
    driver.find_element(By.CSS_SELECTOR, f'#tracks tbody tr[data-id="{listed[0]}"] button.more').click()
    sim_rows = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#similar tbody tr[data-id]"),
                     what="similar list")
    sim_ids = [int(r.get_attribute("data-id")) for r in sim_rows]
    assert sim_ids and listed[0] not in sim_ids
    assert set(sim_ids) <= energetic  # the filter holds inside the search
    assert "within mood:energetic" in driver.find_element(By.ID, "similar-title").text

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-browser.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_page_passes_its_content_security_policy(server, driver):
    """The page works under the server's CSP with no violation in the console, and the
    policy is really enforced: an injected inline script does not run."""
    from selenium.webdriver.common.by import By

    base, _ = server
    driver.get_log("browser")  # drop what earlier tests logged
    driver.get(base + "/")
    _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")) == 15, what="tracks listed")
    driver.find_element(By.CSS_SELECTOR, "#tracks tbody tr").click()
    _wait(lambda: driver.execute_script(
        "const i = document.getElementById('spectrogram'); return i.complete && i.naturalWidth > 100"),
        what="spectrogram image")
    before = [e["message"] for e in driver.get_log("browser")]
    violations = [m for m in before if "Content Security Policy" in m]
    assert not violations, violations
    ran = driver.execute_script(
        "window.__injected = false; const s = document.createElement('script');"
        "s.textContent = 'window.__injected = true'; document.body.append(s); return window.__injected;")
    assert ran is False, "an inline script ran: no CSP in force"
    after = [e["message"] for e in driver.get_log("browser")]
    assert any("Content Security Policy" in m for m in after), after  # and the browser reported it


def test_durations_round_to_whole_seconds(server, driver):
    base, _ = server
    driver.get(base + "/")
    got = driver.execute_script("return [119.88, 59.6, 0.4, 3599.7, 61].map(fmtTime)")
    assert got == ["2:00", "1:00", "0:00", "60:00", "1:01"]
