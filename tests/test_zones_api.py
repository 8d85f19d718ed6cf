"""A stream's checkout zones: GET / PUT /v1/streams/{name}/zones on one lane of the shipped bundle (its
event head proposes zones unless they are set), kept in the stream's state dir for the next start,
where the config's zones win; each refusal is one line; a config with a bad polygon stops `lvm-edge run`
with one line and exit 2, before anything opens. No frame is streamed."""
from __future__ import annotations

import dataclasses
import json

import pytest

from edge_runtime.items.zones import Zones
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.zones_file import ZONES_FILE
from tests.conftest import SHIPPED_BUNDLE
from tests.fakes import one_line_error

SCANNER = [[0.4, 0.5], [0.6, 0.5], [0.6, 0.7], [0.4, 0.7]]
BAG = [[0.7, 0.2], [0.9, 0.2], [0.8, 0.4]]
URL = "/v1/streams/default/zones"


@pytest.fixture(autouse=True)
def _event_head(shipped_engine):
    if shipped_engine.events is None:
        pytest.skip("the shipped bundle has no event head")


def test_put_get_and_kept_for_the_next_start(lane_app, shipped_engine):
    client, _, rt = lane_app
    r = client.get(URL).json()
    assert r["zones"] is None and r["origin"] is None and r["saved"] is None
    assert r["status"].startswith("missing: proposing")

    r = client.put(URL, json={"zones": {"scanner": SCANNER, "bag": BAG}})
    assert r.status_code == 200, r.text
    assert r.json()["origin"] == "configured" and r.json()["zones"] == {"scanner": SCANNER, "bag": BAG}
    assert r.json()["light"].startswith("the event head's read; proposing the light zone")
    assert client.get(URL).json() == r.json()
    light = [[0.62, 0.26], [0.66, 0.26], [0.66, 0.3], [0.62, 0.3]]  # the scanner light marked too
    r = client.put(URL, json={"zones": {"scanner": SCANNER, "bag": BAG, "light": light}})
    assert r.status_code == 200 and r.json()["light"].startswith("configured")
    r = client.put(URL, json={"zones": {"scanner": SCANNER, "bag": BAG}})
    assert rt.stream.status()["items"]["zone_names"] == ["bag", "scanner"]
    kept = rt.state_dir / ZONES_FILE
    assert r.json()["saved"] == str(kept) and json.loads(kept.read_text())["zones"]["bag"] == BAG

    again = Runtime(shipped_engine, state_dir=rt.state_dir)  # a restart reads them back
    try:
        assert again.event_items().zones_origin == "configured"
        assert again.event_items().zones.to_dict() == {"scanner": SCANNER, "bag": BAG}
    finally:
        again.close()

    r = client.put(URL, json={"zones": None})  # back to proposing, and nothing kept for the next start
    assert r.status_code == 200 and r.json()["zones"] is None and r.json()["origin"] is None
    assert r.json()["saved"] is None and not kept.exists()


def test_the_configs_zones_win_over_those_kept(lane_app, shipped_engine):
    client, _, rt = lane_app
    assert client.put(URL, json={"zones": {"scanner": SCANNER}}).status_code == 200
    lines = []
    again = Runtime(shipped_engine, state_dir=rt.state_dir, zones=Zones.from_dict({"bag": BAG}), warn=lines.append)
    try:
        assert again.event_items().zones.to_dict() == {"bag": BAG}
        assert len(lines) == 1 and "config's zones are used" in lines[0] and ZONES_FILE in lines[0]
    finally:
        again.close()


def test_a_damaged_file_is_set_aside(lane_app, shipped_engine):
    _, _, rt = lane_app
    rt.state_dir.mkdir()
    (rt.state_dir / ZONES_FILE).write_text('{"zones": {"scanner": [[0, 0], [1, 1]]}}')
    lines = []
    again = Runtime(shipped_engine, state_dir=rt.state_dir, warn=lines.append)
    try:
        assert again.event_items().zones is None
        assert len(lines) == 1 and "at least 3 points" in lines[0] and "proposed again" in lines[0]
        assert not (rt.state_dir / ZONES_FILE).exists() and list(rt.state_dir.glob(f"{ZONES_FILE}.corrupt*"))
    finally:
        again.close()


@pytest.mark.parametrize("body, status, words", [
    ({"zones": {"scanner": SCANNER[:2]}}, 422, "zones: zone 'scanner': a polygon needs at least 3 points, got 2"),
    ({"zones": {"bag": [[0.7, 0.2], [1.2, 0.2], [0.8, 0.4]]}}, 422, "zone 'bag': every point must lie in [0, 1]"),
    ({"zones": {"till": BAG}}, 422, "zone 'till' is not one of basket, scanner, counter, bag"),
    ({"zones": {"bag": [[0.7, "x"], [0.9, 0.2], [0.8, 0.4]]}}, 422, "zone 'bag': points must be [x, y]"),
    ({"zones": {"bag": [0.7, 0.2, 0.9]}}, 422, "zone 'bag': points must be [x, y] pairs"),
    ({"zones": None, "polygons": {"bag": BAG}}, 422, "unknown field 'polygons'"),
    ({}, 422, "missing field 'zones'"),
])
def test_bad_zones_are_one_line(lane_app, body, status, words):
    client, _, rt = lane_app
    assert words in one_line_error(client.put(URL, json=body), status)
    assert rt.event_items().zones is None and not (rt.state_dir / ZONES_FILE).exists()  # nothing changed


def test_an_unknown_stream_and_one_without_an_event_path(lane_app, shipped_engine):
    client, hub, _ = lane_app
    assert "no stream named 'lane9'" in one_line_error(client.get("/v1/streams/lane9/zones"), 404)
    assert "no stream named 'lane9'" in one_line_error(
        client.put("/v1/streams/lane9/zones", json={"zones": None}), 404)

    from edge_runtime.backends.bundle import load_bundle
    from edge_runtime.engine.engine import Engine

    # the shipped bundle without its event head: a memory-only stream, where zones apply to nothing
    with Engine(dataclasses.replace(load_bundle(SHIPPED_BUNDLE), event_head=None), threads=1) as plain:
        lines = []
        rt = Runtime(plain, name="plain", zones=Zones.from_dict({"bag": BAG}), warn=lines.append)
        try:
            assert rt.stream.items is None and len(lines) == 1 and "no event head" in lines[0]
            hub._streams["plain"] = rt  # beside the lane, as Streams.create would put it
            for r in (client.get("/v1/streams/plain/zones"),
                      client.put("/v1/streams/plain/zones", json={"zones": {"bag": BAG}})):
                assert "has no event path" in one_line_error(r, 409)
        finally:
            hub._streams.pop("plain", None)
            rt.close()


def test_a_stream_added_over_the_api_takes_its_zones(lane_app):
    client, hub, _ = lane_app
    bad = client.post("/v1/streams", json={"name": "lane2", "source": "demo://checkout?duration=1",
                                           "zones": {"scanner": SCANNER[:2]}})
    assert "zone 'scanner'" in one_line_error(bad, 422) and "lane2" not in hub.names()
    r = client.post("/v1/streams", json={"name": "lane2", "source": "demo://checkout?duration=1",
                                         "zones": {"scanner": SCANNER}})
    assert r.status_code == 201, r.text
    try:
        got = client.get("/v1/streams/lane2/zones").json()
        assert got["origin"] == "configured" and got["zones"] == {"scanner": SCANNER}
    finally:
        hub.remove("lane2")


def test_a_config_with_a_bad_polygon_exits_2_with_one_line(tmp_path, capsys):
    from edge_runtime.cli import main

    cfg = tmp_path / "lanes.yaml"
    cfg.write_text("streams:\n  - name: lane1\n    uri: demo://checkout\n"
                   "    zones:\n      bag: [[0.1, 0.1], [0.2, 0.1], [0.2, 1.4]]\n")
    assert main(["run", "--config", str(cfg), "--api", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stream 'lane1'" in err and "zone 'bag'" in err and str(cfg) in err


def test_the_dashboard_draws_and_edits_the_zones(lane_app):
    """The page's zones panel in chromium: the stream's zones outlined and labelled; a corner dragged
    and saved is what the API then holds."""
    from pathlib import Path

    import httpx

    from edge_runtime.serve.api import create_app
    from tests.fakes import serve_app

    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"{chromium} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    _, _, rt = lane_app
    with serve_app(create_app(rt)) as where, sync_api.sync_playwright() as pw:
        url = f"http://{where}"
        assert httpx.put(url + URL, json={"zones": {"scanner": SCANNER, "bag": BAG}}).status_code == 200
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            zones = page.locator("#zones polygon.zone")
            sync_api.expect(zones).to_have_count(2, timeout=15_000)
            sync_api.expect(page.locator("#zones text.zone-label")).to_have_text(["scanner", "bag"])
            sync_api.expect(page.locator("#zones-origin")).to_have_text("(configured)")

            page.click("#zones-edit")
            handle = page.locator("#zones circle.zone-handle[data-zone=bag][data-index='0']")
            box = page.locator("#zones rect.frame").bounding_box()
            start = handle.bounding_box()
            page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.1 * box["height"], steps=4)
            page.mouse.up()
            page.click("#zones-light")  # the scanner light: a square only when asked for, then dragged into place
            sync_api.expect(page.locator("#zones-light")).to_be_hidden()
            sync_api.expect(page.locator("#zones polygon.zone-light")).to_have_count(1)
            page.click("#zones-save")
            sync_api.expect(page.locator("#zones-save")).to_be_hidden()
            got = httpx.get(url + URL).json()
            moved = got["zones"]["bag"][0]
            assert moved == pytest.approx([0.5, 0.1], abs=0.01) and rt.event_items().zones.polygons["bag"][0] == tuple(moved)
            assert len(got["zones"]["light"]) == 4 and got["light"].startswith("configured")
            assert not errors, errors
        finally:
            browser.close()
