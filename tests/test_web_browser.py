"""A buyer's session in headless Debian chromium, at 1400 px (desktop) and 400 px (phone).

Each width walks the same journey on a real uvicorn server over a real catalog: filter by a
facet and a length range, play, arrow down to the next track, open "similar" (it must be in
view without scrolling, the seed playing), go back, favourite a track, add it to a playlist
and export that as M3U8, upload a clip.  Along the way: axe-core (vendored, injected by the
test, never served) reports no serious or critical violation, the page stays within the
window's width, and a strict Content-Security-Policy (no inline script/style, no eval) is
never violated.  Screenshots go to ``test-artifacts/web-<width>-<step>.png``.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_search_fixtures import build_catalog

pytestmark = pytest.mark.browser

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
#: The policy the page must live under (the strictest the app can send).
STRICT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
              "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; "
              "report-uri /csp-report")
#: Track lengths by seed: the length slider must split them.
DURATIONS = (3.0, 6.0, 9.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture()
def server(tmp_path_factory):
    """A fresh catalog and server per journey (favourites and playlists start empty)."""
    import uvicorn
    from fastapi import Request

    from soundalike.catalog.store import Catalog
    from soundalike.ingest.peaks import backfill_peaks
    from soundalike.web.app import create_app

    from soundalike.audio.attributes import tempo_unsure
    from soundalike.ingest.refresh import refresh

    built = build_catalog(tmp_path_factory.mktemp("webcat"), per_style=3, durations=DURATIONS)
    with Catalog.open(built.path) as cat:
        # no stored peaks, as after a default ingest (a spread analysis decodes only its
        # excerpts): the page's first view of a track makes them
        assert len(cat.ids_without_peaks()) == 15
    # the musical attributes ingest computes (tempo, key ...), so the BPM slider is there
    assert refresh(["attributes"], catalog=built.path, workers=1).attributes == 15
    with Catalog.open(built.path) as cat:
        attrs = cat.attributes_of(cat.match(None).tolist())
        built.bpm = {i: a["bpm"] for i, a in attrs.items() if a.get("bpm") is not None}
        # tempi measured without a steady beat: the page shows "?" for them
        built.bpm_unsure = {i for i, a in attrs.items() if tempo_unsure(a)}
    app = create_app(built.path)
    reports: list[dict] = []

    @app.middleware("http")
    async def strict_csp(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = STRICT_CSP
        return response

    @app.post("/csp-report", include_in_schema=False)
    async def csp_report(request: Request):
        reports.append(json.loads(await request.body() or b"{}"))
        return {}

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    _wait(lambda: srv.started, 20, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", built, reports
    srv.should_exit = True
    th.join(timeout=10)


def _driver(profile: Path, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                f"--window-size={width},{height}", "--mute-audio", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(profile / "downloads"),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP violations land in the console
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    if width < 500:  # below Chrome's smallest window: emulate a phone's viewport instead
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})
    d.set_page_load_timeout(30)
    d.set_script_timeout(60)
    return d


@pytest.fixture(scope="module", params=[(1400, 900), (400, 860)], ids=["1400px", "400px"])
def driver(request, tmp_path_factory):
    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        pytest.skip("needs Debian chromium and chromium-driver (make test installs them)")
    w, h = request.param
    profile = tmp_path_factory.mktemp(f"chrome-{w}")
    d = _driver(profile, w, h)
    d.width = w
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    """What the test does and checks, in a buyer's words."""

    def __init__(self, d, base: str):
        from selenium.webdriver.common.by import By

        self.d, self.base, self.By = d, base, By
        self.small = d.width <= 800

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def css(self, sel):
        return self.d.find_elements(self.By.CSS_SELECTOR, sel)

    def one(self, sel):
        return self.d.find_element(self.By.CSS_SELECTOR, sel)

    def shot(self, step: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        p = ARTIFACTS / f"web-{self.d.width}-{step}.png"
        self.d.save_screenshot(str(p))
        assert p.stat().st_size > 5_000
        return p

    def row_ids(self) -> list[int]:
        return [int(r.get_attribute("data-id")) for r in self.css("#list li.row")]

    def settle(self, what="the list"):
        _wait(lambda: not self.js("return document.getElementById('list').hasAttribute('aria-busy')"), what=what)

    def rows(self, n=None, what="rows"):
        self.settle(what)
        return _wait(lambda: (r := self.row_ids()) and (n is None or len(r) == n) and r, what=what)

    def in_view(self, sel) -> bool:
        """Whether the element is wholly inside the window, above the player bar."""
        return self.js("""
            const e = document.querySelector(arguments[0]); if (!e) return false;
            const r = e.getBoundingClientRect();
            const bar = document.getElementById('player-bar').getBoundingClientRect().top;
            return r.height > 0 && r.top >= 0 && r.bottom <= bar && r.left >= 0 && r.right <= window.innerWidth;""", sel)

    def no_sideways_scroll(self):
        sw, iw = self.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert sw <= iw, f"page is {sw} px wide in a {iw} px window"

    def axe(self, where: str):
        if not self.js("return typeof axe !== 'undefined'"):
            self.js(AXE.read_text(encoding="utf-8"))
        res = self.d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))).catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));""")
        bad = [v for v in res if v["impact"] in ("serious", "critical")]
        assert not bad, f"axe ({where}, {self.d.width}px): " + json.dumps(bad, indent=1)

    def open_filters(self):
        if self.small:
            self.one("#filters-open").click()
            _wait(lambda: self.one("#filters-close").is_displayed(), what="filters drawer")

    def close_filters(self):
        if self.small:
            self.one("#filters-close").click()
            _wait(lambda: not self.js("return document.body.classList.contains('filters-open')"), what="drawer closed")

    def playing_src(self) -> str:
        return self.js("const a = document.getElementById('audio'); return (!a.paused && a.currentTime > 0) ? a.src : ''")


def test_buyer_journey(server, driver, tmp_path):
    from selenium.webdriver.common.keys import Keys

    from soundalike.catalog.store import Catalog

    base, built, csp_reports = server
    pg = Page(driver, base)
    driver.get(base + "/")
    all_ids = pg.rows(15, "15 tracks listed")
    pg.no_sideways_scroll()
    # the player bar is always reachable, on a phone too
    assert pg.js("return document.getElementById('player-bar').getBoundingClientRect().bottom") <= pg.js(
        "return window.innerHeight") + 1
    # rows show a readable title, the length, and the file name where the title is not the name
    first = pg.one("#list li.row")
    assert first.find_element(pg.By.CSS_SELECTOR, ".title").text.strip()
    assert ":" in first.find_element(pg.By.CSS_SELECTOR, ".c-num").text
    # BPM and key on every measured row, on a phone too: shown, inside the window, not on the title
    cells = pg.js("""return [...document.querySelectorAll('#list li.row')].map(r => {
        const b = r.querySelector('.c-bpm'), k = r.querySelector('.c-key'), t = r.querySelector('.title');
        const [rb, rk, rt] = [b, k, t].map(e => e.getBoundingClientRect());
        const seen = (e, x) => e.textContent.trim() && getComputedStyle(e).visibility === 'visible'
                               && x.width > 0 && x.left >= 0 && x.right <= window.innerWidth;
        return {id: +r.dataset.id, bpm: b.textContent.trim(), bpmSeen: !!seen(b, rb), key: k.textContent.trim(),
                keySeen: !!seen(k, rk), apart: rb.right <= rk.left + 1 && (rb.top >= rt.bottom || rb.left >= rt.right)};
    })""")
    measured = [c for c in cells if c["id"] in built.bpm]
    # the API gives 0.1 BPM, the row whole BPM; a tempo without a steady beat reads "?"
    bad = [(c, built.bpm[c["id"]]) for c in measured
           if not (c["bpm"] == ("?" if c["id"] in built.bpm_unsure
                                else str(math.floor(round(built.bpm[c["id"]], 1) + 0.5)))
                   and c["bpmSeen"] and c["apart"])]
    assert measured and not bad, bad
    assert any(c["key"] for c in cells) and all(c["keySeen"] for c in cells if c["key"]), cells
    pg.axe("list")
    pg.shot("1-list")

    # ---- the list is one Tab stop: Tab lands on a row, then only that row's buttons follow
    from selenium.webdriver.common.keys import Keys as K

    pg.js("document.getElementById('sort').focus()")
    driver.switch_to.active_element.send_keys(K.TAB)
    assert pg.js("return document.activeElement.matches('#list > li.row')"), "Tab did not land on a row"
    inside = 1  # focus stops inside the list: the row, then its own buttons
    while True:
        driver.switch_to.active_element.send_keys(K.TAB)
        if not pg.js("return document.getElementById('list').contains(document.activeElement)"):
            break
        inside += 1
        assert inside < 12, "Tab walks through more than one row"
    per_row = pg.js("return document.querySelectorAll('#list > li.row:first-child :is(button, a[href])').length")
    assert per_row >= 4 and inside == 1 + per_row, (inside, per_row)

    # ---- a BPM range (tempo from the stored attributes): the rows are the tracks within it
    bpms = sorted(built.bpm.values())
    assert len(bpms) >= 6, built.bpm
    lo, hi = math.floor(bpms[len(bpms) // 4]), math.ceil(bpms[(3 * len(bpms)) // 4])
    want = {i for i, b in built.bpm.items() if lo <= b <= hi}
    assert 0 < len(want) < len(all_ids)
    pg.open_filters()
    assert pg.one("#range-bpm").is_displayed()
    for field, v in (("bpm-min", lo), ("bpm-max", hi)):
        pg.js(f"const s = document.getElementById('{field}'); s.value = {v}; s.dispatchEvent(new Event('input')); "
              "s.dispatchEvent(new Event('change'));")
        pg.settle("BPM filter")
    _wait(lambda: set(pg.rows(len(want), "rows within the BPM range")) == want, what="BPM rows")
    assert f"bpm:{lo}..{hi}" in pg.one("#where").get_attribute("value")
    cells = pg.js("return [...document.querySelectorAll('#list li.row .c-bpm')].map(e => e.textContent)")
    shown = [int(x) for x in cells if x != "?"]
    assert len(cells) == len(want) and all(lo <= b <= hi for b in shown), cells
    assert cells.count("?") == len(want & built.bpm_unsure), (cells, built.bpm_unsure)
    pg.close_filters()
    pg.shot("2-bpm")
    pg.one(f'#active button.term[aria-label="remove filter bpm:{lo}..{hi}"]').click()
    pg.rows(15, "all tracks again")

    # ---- filter by a facet (behind the Filters button on a phone) and a length range
    energetic = set(built.ids["drum-loop"])
    pg.open_filters()
    if pg.small:
        pg.no_sideways_scroll()
        pg.axe("filters drawer")
        pg.shot("2-filters")
    pg.one('#facets button[data-term="mood:energetic"]').click()
    listed = pg.rows(3, "3 energetic tracks")
    assert set(listed) == energetic
    assert pg.one("#where").get_attribute("value") == "mood:energetic"
    assert "where=mood%3Aenergetic" in driver.current_url  # the URL holds the filter
    # a length range: the shortest track goes (3 s), the 6 and 9 s ones stay
    pg.js("const s = document.getElementById('duration-min'); s.value = 5; s.dispatchEvent(new Event('input')); "
          "s.dispatchEvent(new Event('change'));")
    long_ones = pg.rows(2, "2 energetic tracks of 5 s or more")
    assert set(long_ones) < energetic
    where = pg.one("#where").get_attribute("value")
    assert where.startswith("mood:energetic duration:5..")
    # facets agree with the filter: every count is at most the number listed
    counts = [int(n.text) for n in pg.css("#facets button.facet .n")]
    assert counts and max(counts) <= 2
    pg.close_filters()
    pg.shot("3-filtered")

    # ---- play, then the down arrow plays the next row
    pg.one("#list li.row button.play").click()
    _wait(lambda: pg.playing_src().endswith(f"/api/tracks/{long_ones[0]}/audio"), what="first row playing")
    # the waveform: its peaks computed by the server on this first view, stored, and drawn
    # (bars of the waveform's height, not the flat line drawn without peaks)
    _wait(lambda: pg.js("return ui.peaks && ui.peaks.n === 1000"), what="peaks loaded")
    with Catalog.open(built.path) as cat:
        assert cat.get_peaks(long_ones[0]) is not None
        assert long_ones[0] not in cat.ids_without_peaks() and len(cat.ids_without_peaks()) >= 13
    _wait(lambda: pg.js(
        "const c = document.getElementById('wave'); const g = c.getContext('2d');"
        "const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;"
        "return n > 4 * (c.width + c.height);"), what="the waveform drawn from its peaks")  # flat: 2 (w + h)
    driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    _wait(lambda: pg.playing_src().endswith(f"/api/tracks/{long_ones[1]}/audio"), what="second row playing")
    sel = pg.one(f'#list li.row[data-id="{long_ones[1]}"]')
    assert "selected" in sel.get_attribute("class")
    assert driver.switch_to.active_element == sel  # focus is on the selected row
    t0 = pg.js("return document.getElementById('audio').currentTime")
    _wait(lambda: pg.js("return document.getElementById('audio').currentTime") > t0 + 0.2, what="playback advancing")
    # click-to-seek on the waveform: the right half of the bar lands past the middle
    wave = pg.one("#wave")
    driver.execute_script("""const c = arguments[0], r = c.getBoundingClientRect();
        c.dispatchEvent(new MouseEvent('click', {clientX: r.left + r.width * 0.75, clientY: r.top + r.height / 2, bubbles: true}));""", wave)
    _wait(lambda: pg.js("const a = document.getElementById('audio'); return a.currentTime > a.duration * 0.6"), what="seek")
    pg.shot("4-playing")
    # space pauses
    driver.switch_to.active_element.send_keys(Keys.SPACE)
    _wait(lambda: pg.js("return document.getElementById('audio').paused"), what="paused by space")

    # ---- "similar" opens where the eye is: the seed shown and playing, results in view
    list_url = driver.current_url
    seed = long_ones[0]
    pg.one(f'#list li.row[data-id="{seed}"] button.similar-btn').click()
    _wait(lambda: "view=similar" in driver.current_url and f"seed={seed}" in driver.current_url, what="similar URL")
    sims = pg.rows(None, "similar rows")
    assert seed not in sims and set(sims) <= energetic  # within the active filter
    assert pg.in_view("#seed") and pg.in_view("#list li.row"), "similar results are out of view"
    _wait(lambda: pg.playing_src().endswith(f"/api/tracks/{seed}/audio"), what="seed playing")
    assert "match" in pg.one("#list li.row .score").text
    pg.axe("similar")
    pg.shot("5-similar")
    # back to the list: the same filtered rows, the URL as before
    pg.one("#back").click()
    _wait(lambda: driver.current_url == list_url, what="back to the list URL")
    assert pg.rows(2, "list again") == long_ones
    # the browser's back/forward buttons walk the same states
    driver.back()
    _wait(lambda: "view=similar" not in driver.current_url and "duration" not in driver.current_url, what="history back")
    assert set(pg.rows(3, "energetic list from history")) == energetic
    driver.forward()
    assert pg.rows(2, "forward again") == long_ones

    # ---- favourite a track, add it to a new playlist, export the playlist
    fav = long_ones[1]
    pg.one(f'#list li.row[data-id="{fav}"] button.fav').click()
    _wait(lambda: pg.one(f'#list li.row[data-id="{fav}"] button.fav').get_attribute("aria-pressed") == "true",
          what="heart on")
    pg.one("#view-favourites").click()
    assert pg.rows(1, "favourites view") == [fav]
    pg.one("#fav-similar").click()
    assert fav not in pg.rows(None, "similar to my favourites")
    pg.one("#view-favourites").click()
    pg.rows(1, "favourites again")
    pg.one(f'#list li.row[data-id="{fav}"] button.add').click()
    _wait(lambda: pg.one("#add-dialog").is_displayed(), what="playlist dialog")
    name = f"Trailer picks {driver.width}"
    pg.one("#new-playlist").send_keys(name)
    pg.axe("playlist dialog")
    pg.one("#add-ok").click()
    _wait(lambda: "Added" in pg.one("#status").text, what="added message")
    pg.one("#view-playlists").click()
    pl = _wait(lambda: [e for e in pg.css("#list li.pl-row") if name in e.text], what="the new playlist")[0]
    pl.find_element(pg.By.CSS_SELECTOR, "button.pl-open").click()
    assert pg.rows(1, "the playlist's tracks") == [fav]
    # a playlist is not filtered: neither chips nor a count of filter terms on the Filters button
    assert pg.one("#filter-n").text == "" and not pg.one("#active").is_displayed()
    assert pg.js("return !document.getElementById('filters-note').hidden")  # the panel says so
    pg.shot("6-playlist")
    href = pg.one("#pl-m3u").get_attribute("href")
    with urllib.request.urlopen(href, timeout=10) as r:
        m3u = r.read().decode("utf-8")
        assert "attachment" in r.headers["Content-Disposition"]
    assert m3u.startswith("#EXTM3U") and f"/api/tracks/{fav}/audio" in m3u and f"#PLAYLIST:{name}" in m3u

    # ---- upload a clip: results open at the top, in view
    driver.get(base + "/")
    pg.rows(15, "all tracks")
    pg.one("#upload-open").click()
    clip = built.audio_dir / "piano-arpeggio-1.wav"
    pg.one("#upload-file").send_keys(str(clip))
    pg.one("#upload-form button[type=submit]").click()
    _wait(lambda: "your clip" in pg.one("#seed-name").text, timeout=30, what="upload results")
    hits = pg.rows(None, "upload hits")
    assert hits[0] in built.ids["piano-arpeggio"]  # the clip is that track's own file
    assert pg.in_view("#seed") and pg.in_view("#list li.row")
    pg.no_sideways_scroll()
    pg.shot("7-upload")

    assert not csp_reports, f"Content-Security-Policy violations: {csp_reports}"
    assert set(all_ids) >= energetic


def test_page_passes_the_servers_own_csp(tmp_path_factory, driver):
    """Under the policy the server itself sends (guard.CSP, no test override), playing a
    track with its waveform logs no violation, and the policy is enforced: an injected
    inline script does not run."""
    import uvicorn

    from soundalike.catalog.store import Catalog
    from soundalike.ingest.peaks import backfill_peaks
    from soundalike.web.app import create_app

    built = build_catalog(tmp_path_factory.mktemp("cspcat"), per_style=1, duration_s=3.0)
    with Catalog.open(built.path) as cat:
        backfill_peaks(cat)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(built.path), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        _wait(lambda: srv.started, 20, "uvicorn to start")
        pg = Page(driver, f"http://127.0.0.1:{port}")
        driver.get_log("browser")  # drop what earlier tests logged
        driver.get(pg.base + "/")
        pg.rows(5, "5 tracks")
        pg.one("#list li.row button.play").click()
        _wait(lambda: pg.js("return ui.peaks && ui.peaks.n > 0"), what="waveform drawn")
        pg.js("document.getElementById('audio').pause()")
        logged = [e["message"] for e in driver.get_log("browser")]
        assert not [m for m in logged if "Content Security Policy" in m], logged
        ran = pg.js("window.__injected = false; const s = document.createElement('script');"
                    "s.textContent = 'window.__injected = true'; document.body.append(s); return window.__injected;")
        assert ran is False, "an inline script ran: no CSP in force"
        assert any("Content Security Policy" in e["message"] for e in driver.get_log("browser"))
        got = pg.js("return [119.88, 59.6, 0.4, 3599.7, 61].map(fmtTime)")
        assert got == ["2:00", "1:00", "0:00", "60:00", "1:01"]  # lengths round to whole seconds
    finally:
        srv.should_exit = True
        th.join(timeout=10)
