"""The dashboard's alerts panel in a real browser (Debian's chromium, Playwright): alerts raised on
the runtime appear while the page polls, a new one marked, and a verdict button acknowledges one with
its outcome. Skips, saying
why, where chromium or Playwright is missing."""
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def _draft(i: int) -> dict:
    return {"rule": "bagged_without_scan", "product": f"item {i}", "start": 60.0 * i, "end": 60.0 * i + 3,
            "confidence": 0.8, "box": None, "evidence": []}


@pytest.fixture
def served(tmp_path, request, shipped_engine):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the dashboard test needs a browser")
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    import uvicorn

    from edge_runtime.cli.run import bind
    from edge_runtime.serve.api import create_app
    from edge_runtime.serve.pipeline import Runtime

    rt = Runtime(shipped_engine, state_dir=tmp_path / "state")
    app = create_app(rt)
    hub = app.app.state.streams
    settings = {"rules": {"bagged_without_scan": {}}, **getattr(request, "param", {})}
    hub.alerts = AlertService(AlertSettings.model_validate(settings),
                              tmp_path / "state", registry=hub.metrics.registry, evaluate=False)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", hub.alerts
    finally:
        server.should_exit = True
        thread.join(5)
        hub.alerts.close()
        rt.close()


@contextmanager
def dashboard(url: str):
    """The dashboard open in headless chromium -> (page, the page's script errors so far)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            yield page, errors
        finally:
            browser.close()


def test_alerts_appear_live_and_ack(served):
    url, alerts = served
    first = alerts.raise_alert(_draft(1), stream="default")[0]
    with dashboard(url) as (page, errors):
        expect(page.locator(f"#alerts li[data-id='{first.id}']")).to_be_visible(timeout=20_000)
        assert page.locator("#alerts li.new").count() == 0  # what was there at load is not "new"
        expect(page.locator("#alerts-count")).to_have_text("1 open")
        second = alerts.raise_alert(_draft(2), stream="default")[0]
        row = page.locator(f"#alerts li[data-id='{second.id}']")
        expect(row).to_have_class("alert new", timeout=10_000)  # raised while the page was open
        page.wait_for_timeout(2500)  # polls later it is still marked
        assert "new" in row.get_attribute("class")
        assert "item 2" in row.inner_text() and "bagged without scan" in row.inner_text()
        assert row.locator("button.ack").all_inner_texts() == ["Confirmed", "False alert", "Customer fixed"]
        row.locator("button.ack[data-outcome='false_alert']").click()
        expect(row).to_have_attribute("data-status", "acked", timeout=10_000)
        expect(row.locator(".outcome")).to_have_text("False alert")  # the outcome shown in place of the buttons
        deadline = time.monotonic() + 10
        while alerts.outbox.get(second.id).status != "acked" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alerts.outbox.get(second.id).outcome == "false_alert" and alerts.outbox.get(first.id).status == "open"
        page.wait_for_timeout(2500)  # polled again: the outcome comes from the list
        expect(row.locator(".outcome")).to_have_text("False alert")
        assert row.locator("button.ack").count() == 0
        expect(page.locator("#alerts-count")).to_have_text("1 open", timeout=10_000)
        # staff's verdicts learnt (edge_runtime/alerts/verifier.py): an alert it holds is greyed, with its p(right)
        from edge_runtime.alerts.settings import VerifierSettings
        from edge_runtime.alerts.verifier import fit

        alerts.settings = alerts.settings.model_copy(update={"verifier": VerifierSettings(hold_below=0.5)})
        alerts.verifier = fit([("default", {**_draft(i), "end": 60.0 * i + (3 if i % 3 else 0.1)},
                                "confirmed" if i % 3 else "false_alert") for i in range(10, 46)],
                              min_verdicts=30, hold_below=0.5)
        held = alerts.raise_alert({**_draft(50), "end": 60.0 * 50 + 0.1}, stream="default")[0]
        assert held.held
        row = page.locator(f"#alerts li[data-id='{held.id}']")
        expect(row).to_have_class("alert new held", timeout=10_000)
        expect(row.locator(".held-tag")).to_have_text(f"held · {round(100 * held.p_right)} % likely right")
        # an alert whose item was scanned after it (edge_runtime/alerts/cleared.py): dimmed, says so, not counted open
        expect(page.locator("#alerts-count")).to_have_text("2 open", timeout=10_000)
        alerts.clear_alert(first.id, {"why": "scanned", "t": 69.0, "after_s": 8.6, "item": 4})
        row = page.locator(f"#alerts li[data-id='{first.id}']")
        expect(row.locator(".cleared-tag")).to_have_text("cleared · scanned 9 s later", timeout=10_000)
        assert "cleared" in row.get_attribute("class")
        expect(page.locator("#alerts-count")).to_have_text("1 open", timeout=10_000)   # the held one; not the cleared
        assert errors == []


@pytest.mark.parametrize("served", [{"scans": "pos"}], indirect=True)
def test_the_panel_says_whether_the_till_is_sending(served):
    # with the till's scans, a feed that stops makes every bag look unscanned: staff see its last read
    url, alerts = served
    with dashboard(url) as (page, errors):
        expect(page.locator("#alerts-delivery")).to_contain_text("no scans from the till yet", timeout=20_000)
        alerts.add_pos_scans("default", [("apple", 3.0), ("bread", 5.0)], now=5.0)
        expect(page.locator("#alerts-delivery")).to_contain_text("2 scans from the till, the last", timeout=20_000)
        assert errors == []


def test_an_alerts_pictures_show_beside_it(served):
    import numpy as np

    from edge_runtime.items.evidence_ring import EvidenceRing

    url, alerts = served
    ring = EvidenceRing("item", 100_000)
    for k in range(50):  # 10 s of one item's track at 5 fps
        ring.add(np.full((96, 96, 3), 5 * k, np.uint8), k / 5, {3: np.array([0.2, 0.2, 0.6, 0.6])})
    draft = {**_draft(1), "start": 4.0, "end": 5.0,
             "evidence": [{"activity": "bag", "product": "item 1", "item": 3, "start": 4.0, "end": 5.0}]}
    alert = alerts.raise_alert(draft, stream="default", ring=ring)[0]
    with dashboard(url) as (page, errors):
        imgs = page.locator(f"#alerts li[data-id='{alert.id}'] .evidence img")
        expect(imgs).to_have_count(3, timeout=20_000)
        page.wait_for_function("() => [...document.querySelectorAll('.evidence img')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)", timeout=10_000)
        assert imgs.first.get_attribute("title").startswith("before")
        assert errors == []
