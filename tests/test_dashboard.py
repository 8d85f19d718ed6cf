"""The dashboard in a real browser: Debian's chromium driven by Playwright against a running
`lvm-edge run --source demo://...` with a token. The page asks for the token, fills its status cards
and memory timeline, lists the catalog with its crops, and draws answers: time intervals on the
timeline, an object's box track, activity scores as bars; the ask box where /v1/ask is served.
Skips, saying why, where chromium or Playwright is missing. /v1/timeline and what is served without
the token are checked without a browser.

LVM_DASHBOARD_SCREENSHOT=docs/dashboard.png also saves the page after the last answer there.
Waits go through selectors and expect(), never wait_for_function: Playwright evaluates a function
string with eval, which the page's Content-Security-Policy (script-src 'self') rightly refuses.
"""
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests skip, saying so; the JSON test still runs
    expect = sync_playwright = None

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TOKEN = "dashboard-test-token"
PRODUCT = "milk carton"
SEED, INSTANCE = 3, 3  # demo seed 3: instance 3 is a milk carton, on screen 6-120 s
# headless Debian chromium as root in a container; nothing may reach the network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _require_browser() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the dashboard test needs a browser")
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _crop_png() -> str:
    from edge_runtime.checkout import CheckoutVideo

    crop = CheckoutVideo(seed=SEED, duration_s=600).object_crop(INSTANCE, 224)
    return base64.b64encode(cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))[1].tobytes()).decode()


def test_timeline_json_and_what_is_open(tiny_bundle):
    """/v1/timeline: covered spans, gaps, the pending clip; the page is open, the data is not."""
    from edge_runtime.serve.api import create_app
    from edge_runtime.engine.engine import Engine
    from edge_runtime.serve.pipeline import Runtime

    with Engine(tiny_bundle, threads=1) as engine:
        times = np.r_[np.arange(20.0), np.arange(30.0, 36.0)]  # 1 fps; nothing from 20 to 30 s
        rt = Runtime(engine)
        engine.ingest(rt.stream, np.zeros((len(times), 112, 112, 3), np.uint8), times)
        with TestClient(create_app(rt, token="t")) as client:
            page = client.get("/")
            assert page.status_code == 200 and "/static/app.js" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert client.get("/static/draw.js").headers["content-type"].startswith("text/javascript")
            assert client.get("/static/api_page.py").status_code == 404
            assert client.get("/static/..%2Fapi_page.py").status_code == 404
            assert client.get("/v1/timeline").status_code == 401
            tl = client.get("/v1/timeline", headers={"Authorization": "Bearer t"}).json()
    # one clip of 16 frames is committed; 4 + 6 frames wait for the next; the gap is already known
    assert tl["coverage"] == {"start": 0.0, "end": 16.0} and tl["covered"] == [[0.0, 16.0]]
    assert tl["gaps"] == [[20.0, 30.0]] and tl["pending"] == [16.0, 35.0] and tl["pending_frames"] == 10
    assert tl["stream_time"] == 35.0 and tl["outage_since"] is None and tl["fps"] == 1.0


@pytest.fixture(scope="module")
def served(tiny_bundle, tmp_path_factory):
    """A real `lvm-edge run` on the demo stream, with a token, a state dir and one catalog product."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("dashboard")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "run.log", "wb")
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--source", f"demo://checkout?seed={SEED}&duration=600",
           "--bundle", str(tiny_bundle), "--state-dir", str(tmp / "state"), "--api", f"127.0.0.1:{port}",
           "--token", TOKEN, "--keep-serving"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        end, progressed = -1.0, time.monotonic()  # a hang is no progress for 120 s, not a slow machine
        while True:
            assert proc.poll() is None and time.monotonic() - progressed < 120, (tmp / "run.log").read_text()
            try:
                st = httpx.get(url + "/v1/status", headers=auth, timeout=5).json()
                if (st["coverage"]["end"] or 0) >= 300:
                    break
                if (st["coverage"]["end"] or 0) > end:
                    end, progressed = st["coverage"]["end"] or 0, time.monotonic()
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        r = httpx.post(url + "/v1/catalog", headers=auth, json={"name": PRODUCT, "images": [_crop_png()]}, timeout=30)
        assert r.status_code == 200, r.text
        # the first question loads the ask encoder (seconds on a busy machine): not the page's time
        httpx.post(url + "/v1/ask", headers=auth, json={"text": f"when was the {PRODUCT} scanned"}, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def page(served):
    """The page in chromium, token typed in once; status and timeline filled."""
    url = served
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh temporary profile (it refuses --user-data-dir)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        outside = []
        pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
        pg.goto(url + "/")
        pg.wait_for_selector("#token-form", state="visible", timeout=10_000)  # 401 until the token is given
        assert "token" in pg.inner_text("#banner")
        assert pg.inner_text("#st-fps") == "–"  # nothing shown without the token
        pg.fill("#token-input", TOKEN)
        pg.click("#token-form button[type=submit]")
        pg.wait_for_selector("#timeline .tl-covered", timeout=15_000)
        expect(pg.locator("#st-backend")).not_to_have_text("–")
        expect(pg.locator("#st-answers")).to_have_text("memory reader")
        yield pg
        assert not errors, errors
        assert not outside, f"the page asked something other than the runtime: {outside}"
        browser.close()


def _screenshot(pg, tmp_path):
    pg.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    dest = os.environ.get("LVM_DASHBOARD_SCREENSHOT")
    if dest:
        shutil.copyfile(tmp_path / "dashboard.png", dest)


def test_status_timeline_and_catalog(page):
    assert page.inner_text("#st-coverage").startswith("0:00 – ") and page.inner_text("#st-rtf").endswith("×")
    assert page.inner_text("#st-dropped") == "0" and page.inner_text("#st-gaps") == "0"
    crop = page.locator("#catalog img").first
    expect(crop).to_have_js_property("complete", True, timeout=10_000)
    assert crop.evaluate("img => img.naturalWidth") == 224
    assert PRODUCT in page.inner_text("#catalog")


def _shown(page, content: str) -> None:
    """The memory reader's answer as the page shows it: its content with its confidence, or, when not
    seen, that said first and the content as its best guess."""
    text, judged = page.inner_text("#answer-text"), page.inner_text("#answer-judgement")
    if page.get_attribute("#answer", "data-status") == "not_seen":
        assert text.startswith("Not seen") and f"Best guess all the same: {content}" in judged
    else:
        assert content in text and judged.startswith("Confidence ") and "answered by the reader" in judged


def test_query_form_draws_answers(page, tmp_path):
    page.click(f"#catalog .product:has-text('{PRODUCT}')")  # picks the product into the form
    assert page.input_value("#query-form select[name=product]") == PRODUCT
    page.select_option("#query-form select[name=type]", "time")
    page.select_option("#query-form select[name=activity]", "scan")
    page.fill("#query-form input[name=start]", "0")
    page.fill("#query-form input[name=end]", "300")
    page.click("#query-form button[type=submit]")
    page.wait_for_selector("#answer[data-state=done][data-type=time]", timeout=20_000)
    assert page.locator("#timeline .tl-interval").count() == 3  # on the timeline
    assert page.locator("#answer-plot[data-kind=intervals] .tl-interval").count() == 3
    _shown(page, "scan: best at")

    page.select_option("#query-form select[name=type]", "object")
    page.click("#query-form button[type=submit]")
    page.wait_for_selector("#answer[data-state=done][data-type=object]", timeout=20_000)
    assert page.locator("#answer-plot[data-kind=track] rect.box").count() > 0
    assert page.locator("#timeline .tl-extent").count() == 1

    page.select_option("#query-form select[name=type]", "activity")
    page.click("#query-form button[type=submit]")
    page.wait_for_selector("#answer[data-state=done][data-type=activity]", timeout=20_000)
    assert page.locator("#answer-plot[data-kind=bars] rect.bar").count() == 8
    _shown(page, "Most likely:")

    page.fill("#query-form input[name=start]", "5000")  # after the stream: nothing in memory
    page.fill("#query-form input[name=end]", "5100")
    page.click("#query-form button[type=submit]")
    expect(page.locator("#answer-text")).to_have_text(re.compile("^Nothing in memory"))

    page.fill("#query-form input[name=start]", "0")
    page.fill("#query-form input[name=end]", "300")
    page.select_option("#query-form select[name=type]", "time")
    page.click("#query-form button[type=submit]")
    page.wait_for_selector("#answer[data-state=done][data-type=time]", timeout=20_000)
    _screenshot(page, tmp_path)


def test_ask_box_draws_answer(served, page, tmp_path):
    url = served
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    if "/v1/ask" not in paths:
        pytest.skip("this runtime serves no /v1/ask")
    page.fill("#ask-text", "when was the kombucha bagged?")  # not in the catalog: one line, the nearest names
    page.click("#ask-form button[type=submit]")
    expect(page.locator("#answer-error")).to_contain_text("milk carton", timeout=30_000)
    assert page.get_attribute("#answer", "data-state") == "error"

    page.select_option("#query-form select[name=type]", "activity")
    page.fill("#query-form input[name=start]", "100")
    page.fill("#ask-text", f"when was the {PRODUCT} scanned in the first 5 minutes?")
    page.click("#ask-form button[type=submit]")
    expect(page.locator("#answer-question")).to_contain_text("scanned", timeout=30_000)
    assert page.get_attribute("#answer", "data-state") == "done", page.inner_text("#answer-error")
    assert page.inner_text("#answer-read-as").startswith("Read as:")
    assert page.locator("#timeline .tl-interval").count() == 3
    assert page.locator("#answer-plot[data-kind=intervals] .tl-interval").count() == 3
    # the reading is put into the form, to be corrected by hand if need be
    assert page.input_value("#query-form select[name=type]") == "time"
    assert page.input_value("#query-form select[name=activity]") == "scan"
    assert page.input_value("#query-form select[name=product]") == PRODUCT
    assert (page.input_value("#query-form input[name=start]"), page.input_value("#query-form input[name=end]")) \
        == ("0", "300")
    _screenshot(page, tmp_path)
    # a refused question next: its one line, and not the answer before it (text, plot or timeline)
    page.fill("#ask-text", f"was the {PRODUCT} stolen?")
    page.click("#ask-form button[type=submit]")
    expect(page.locator("#answer-error")).to_contain_text("stolen", timeout=30_000)
    assert page.get_attribute("#answer", "data-state") == "error"
    assert not page.is_visible("#answer-text") and not page.is_visible("#answer-intervals")
    assert page.locator("#timeline .tl-interval").count() == 0


def test_events_strip_and_what_happened(page):
    """What happened over the memory, drawn under the timeline; asked in words, listed and drawn."""
    expect(page.locator("#events text.row-label")).to_have_text(
        re.compile(r"^what happened 0:00–\d+:\d\d: \d+ event\(s\)$"), timeout=30_000)
    n = int(re.search(r"(\d+) event", page.locator("#events text.row-label").text_content()).group(1))
    assert page.locator("#events rect.ev").count() == n
    if n:  # the catalog's one product is what every event is about
        assert page.get_attribute("#events rect.ev >> nth=0", "data-product") == PRODUCT
    page.fill("#ask-text", "what happened in the first 5 minutes?")
    page.click("#ask-form button[type=submit]")
    page.wait_for_selector("#answer[data-state=done][data-type=happened]", timeout=30_000)
    assert page.inner_text("#answer-read-as").startswith("Read as: what happened")
    assert re.match(r"^(\d+ event\(s\): |Nothing the memory has evidence of)", page.inner_text("#answer-text"))
    expect(page.locator("#events text.row-label")).to_contain_text("what happened 0:00–5:00")


def test_an_answer_about_a_stream_removed_meanwhile_is_not_left_under_the_default_one(served, page):
    url, auth = served, {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url + "/v1/streams", headers=auth, timeout=30,
                   json={"name": "lane2", "source": f"demo://checkout?seed={SEED + 1}&duration=60"})
    assert r.status_code == 201, r.text
    t_end = time.monotonic() + 120
    while (httpx.get(url + "/v1/status", params={"stream": "lane2"}, headers=auth).json()["coverage"]["end"] or 0) < 48:
        assert time.monotonic() < t_end, "lane2 streamed nothing in 2 minutes"
        time.sleep(0.3)
    page.wait_for_selector("#stream-pick:not([hidden])", timeout=15_000)
    page.select_option("#stream-select", "lane2")
    page.fill("#ask-text", f"when was the {PRODUCT} scanned?")
    page.click("#ask-form button[type=submit]")
    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=30_000)
    assert httpx.delete(url + "/v1/streams/lane2", headers=auth, timeout=30).status_code == 200
    expect(page.locator("#banner")).to_contain_text("That stream was removed", timeout=15_000)
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")  # lane2's answer is gone


def test_the_page_goes_on_with_another_stream_when_the_default_one_is_removed(served, page):
    # the last test of the module: it removes the default stream the others read
    url, auth = served, {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url + "/v1/streams", headers=auth, timeout=30,
                   json={"name": "lane3", "source": f"demo://checkout?seed={SEED + 2}&duration=60"})
    assert r.status_code == 201, r.text
    page.wait_for_selector("#stream-pick:not([hidden])", timeout=15_000)
    assert httpx.delete(url + "/v1/streams/default", headers=auth, timeout=30).status_code == 200
    expect(page.locator("#banner")).to_contain_text("The default stream was removed; showing “lane3”", timeout=15_000)
    expect(page.locator("#source")).to_contain_text(f"seed={SEED + 2}", timeout=15_000)  # lane3's status
    time.sleep(2)  # a few status-line ticks of the runtime with its default stream gone
    assert httpx.get(url + "/v1/streams", headers=auth, timeout=30).status_code == 200  # and it serves on
