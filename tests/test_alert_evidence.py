"""An alert's evidence and its nudge: the stream's ring of item crops (bounded in bytes), the JPEGs kept
with the alert in the outbox (an older outbox opens with its rows), served by GET
/v1/alerts/{id}/evidence, deleted with the alert, turned off per stream; webhooks inline them by
config; the nudge goes to .../nudges at QoS 0 and a local webhook, never into the outbox."""
from __future__ import annotations

import base64
import json
import sqlite3
import threading
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from edge_runtime.alerts.outbox import Outbox
from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.items.evidence_ring import EvidenceRing
from fakes import one_line_error
from tools.reliability.mosquitto import Mosquitto, mosquitto_path

needs_broker = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")
TRACK = 7


def _frame(seed: int) -> np.ndarray:
    """A noisy frame: JPEGs of noise are large, so a few of them fill a small ring."""
    return np.random.default_rng(seed).integers(0, 256, (128, 128, 3), np.uint8)


def _ring(max_bytes: int = 200_000, mode: str = "item", seconds: float = 10.0) -> EvidenceRing:
    """A ring fed 5 fps frames with track TRACK (and track 8 beside it) over ``seconds``."""
    ring = EvidenceRing(mode, max_bytes)
    for k in range(int(seconds * 5)):
        ring.add(_frame(k), k / 5, {TRACK: np.array([0.2, 0.2, 0.5, 0.6]), 8: np.array([0.6, 0.1, 0.9, 0.4])})
    return ring


def _draft(i: int, item: int | None = TRACK) -> dict:
    ev = {"activity": "bag", "product": "milk_carton", "start": 4.0 + 60 * i, "end": 5.0 + 60 * i}
    if item is not None:
        ev["item"] = item
    return {"rule": "bagged_without_scan", "product": "milk_carton", "start": 4.0 + 60 * i, "end": 5.0 + 60 * i,
            "confidence": 0.8, "box": None, "evidence": [ev]}


def _service(tmp_path, **cfg) -> AlertService:
    return AlertService(AlertSettings.model_validate({"site": "shop", "rules": {"bagged_without_scan": {}}, **cfg}),
                        tmp_path / "state", evaluate=False)


def test_the_ring_is_bounded_in_bytes_and_picks_before_at_and_after():
    ring = EvidenceRing("item", 30_000)
    for k in range(100):
        ring.add(_frame(k), k / 5, {TRACK: np.array([0.1, 0.1, 0.9, 0.9])})
        assert ring.nbytes <= 30_000 and ring.nbytes == sum(len(c.jpeg) for c in ring.crops)
    assert ring.taken == 50 and len(ring.crops) < 50  # one crop per track per 0.4 s; the oldest went
    ring = _ring()
    picked = ring.pick(TRACK, 4.0, 5.0)
    assert [label for label, _ in picked] == ["before", "at", "after"]
    assert [round(c.t, 1) for _, c in picked] == [2.8, 4.4, 6.0] and all(c.tracks == (TRACK,) for _, c in picked)
    assert picked[0][1].jpeg[:2] == b"\xff\xd8" and ring.pick(99, 4.0, 5.0) == []
    frames = _ring(mode="frame")
    assert all(c.tracks == (TRACK, 8) for c in frames.crops) and len(frames.pick(8, 4.0, 5.0)) == 3


def test_evidence_is_stored_served_and_deleted_with_its_alert(lane_app, tmp_path):
    client, hub, _ = lane_app
    svc = hub.alerts = _service(tmp_path, outbox={"max_alerts": 10})
    try:
        ring = _ring()
        alert, new = svc.raise_alert(_draft(0), stream="lane1", ring=ring)
        assert new and [i.label for i in alert.images] == ["before", "at", "after"]
        body = client.get(f"/v1/alerts/{alert.id}/evidence").json()
        assert body["keep"] == "item" and len(body["images"]) == 3 and body["bytes"] == sum(i.bytes for i in alert.images)
        assert body["bytes"] <= 50_000
        img = client.get(body["images"][1]["url"])
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        import cv2

        pic = cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR)
        assert pic is not None and len(img.content) == body["images"][1]["bytes"]
        assert "has no image 5" in one_line_error(client.get(f"/v1/alerts/{alert.id}/evidence/5.jpg"), 404)
        assert "no alert with id 'nope'" in one_line_error(client.get("/v1/alerts/nope/evidence"), 404)
        one_line_error(client.get("/v1/alerts/nope/evidence/0.jpg"), 404)
        # an alert of no tracked item (the memory path's): evidence is on, none to keep, said so
        plain, _ = svc.raise_alert(_draft(1, item=None), stream="lane1", ring=ring)
        none = client.get(f"/v1/alerts/{plain.id}/evidence").json()
        assert none["images"] == [] and "ring" in none["note"]
        assert client.get("/v1/status").json()["alerts"]["evidence"]["alerts_with_images"] == 1
        # the outbox keeps 10 alerts: the first one's evidence goes with it
        for i in range(2, 12):
            svc.raise_alert(_draft(i), stream="lane1", ring=ring)
        assert svc.outbox.get(alert.id) is None and svc.outbox.evidence_image(alert.id, 0) is None
        one_line_error(client.get(f"/v1/alerts/{alert.id}/evidence"), 404)
        n, total = svc.outbox.evidence_bytes()
        assert n == 10 and total > 0 and svc.outbox.get(plain.id) is None  # the 10 newest, each with its own
    finally:
        svc.close()
        hub.alerts = None


def test_evidence_turned_off_for_a_stream_is_a_404_that_says_so(lane_app, tmp_path):
    client, hub, _ = lane_app
    settings = AlertSettings.model_validate({"rules": {"bagged_without_scan": {}},
                                             "evidence": {"streams": {"lane2": False}}})  # YAML's bare off
    assert settings.evidence.keep_for("lane2") == "off" and settings.evidence.keep_for("lane1") == "item"
    svc = hub.alerts = _service(tmp_path, evidence={"streams": {"lane2": "off"}})
    try:
        alert, _ = svc.raise_alert(_draft(0), stream="lane2", ring=_ring())
        assert alert.images == [] and svc.outbox.evidence(alert.id) == ("off", 0)
        said = one_line_error(client.get(f"/v1/alerts/{alert.id}/evidence"), 404)
        assert "turned off for stream 'lane2'" in said
    finally:
        svc.close()
        hub.alerts = None
    with pytest.raises(ValueError, match="keep"):
        AlertSettings.model_validate({"evidence": {"keep": "video"}})


def test_an_outbox_from_before_evidence_opens_with_its_rows(tmp_path, lane_app):
    """The schema of the outbox before evidence (verdict columns, no evidence column or table)."""
    state = tmp_path / "old"
    state.mkdir()
    db = sqlite3.connect(state / "alerts.db")
    db.executescript("""
        CREATE TABLE alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, stream TEXT NOT NULL,
            status TEXT NOT NULL, raised_at REAL NOT NULL, acked_at REAL, body TEXT NOT NULL, rule TEXT,
            outcome TEXT, verdict_at REAL);
        CREATE TABLE outbox (sink TEXT NOT NULL, seq INTEGER NOT NULL REFERENCES alerts (seq) ON DELETE CASCADE,
            PRIMARY KEY (sink, seq));
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);""")
    body = {"id": "a1", "rule": "pass_around", "site": "s", "stream": "lane1", "product": "milk_carton",
            "start": 1.0, "end": 2.0, "confidence": 0.9, "raised_at": 100.0}
    db.execute("INSERT INTO alerts (id, stream, status, raised_at, body, rule) VALUES ('a1', 'lane1', 'open', 100, ?, "
               "'pass_around')", (json.dumps(body),))
    db.commit()
    db.close()
    box = Outbox(state)
    try:
        assert box.get("a1").images == [] and box.evidence("a1") == (None, 0) and box.counts()["stored"] == 1
        from edge_runtime.alerts.record import from_draft

        new = from_draft(_draft(1), site="s", stream="lane1", stream_time=70.0)
        assert box.add(new, evidence="item", jpegs=[b"\xff\xd8x"]) and box.evidence(new.id) == ("item", 1)
    finally:
        box.close()
    client, hub, _ = lane_app
    svc = hub.alerts = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {}}}), state,
                                    evaluate=False)
    try:
        assert "stored before" in one_line_error(client.get("/v1/alerts/a1/evidence"), 404)
    finally:
        svc.close()
        hub.alerts = None


class _Hook:
    """An HTTP server on loopback recording each POST's JSON."""

    def __init__(self) -> None:
        got = self.got = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _until(cond, timeout: float = 10.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


def test_a_webhook_gets_the_jpegs_inline_by_config_and_the_nudge_its_own_post(tmp_path):
    hook, screen = _Hook(), _Hook()
    svc = _service(tmp_path, webhooks=[hook.url], evidence={"webhook_inline": True, "url_base": "http://lane1.shop:8321"},
                   nudge={"webhook": screen.url})
    try:
        alert, _ = svc.raise_alert(_draft(0), stream="lane1", ring=_ring())
        assert _until(lambda: hook.got and screen.got)
        sent = hook.got[0]
        assert sent["id"] == alert.id and len(sent["images"]) == 3
        assert sent["images"][0]["url"] == f"http://lane1.shop:8321/v1/alerts/{alert.id}/evidence/0.jpg"
        assert base64.b64decode(sent["images"][0]["jpeg_base64"]) == svc.outbox.evidence_image(alert.id, 0)
        nudge = screen.got[0]
        assert nudge["id"] == alert.id and nudge["product"] == "milk_carton" and len(nudge["images"]) == 3
        assert list(svc.outbox.pending()) == [f"webhook:{hook.url}"]  # the nudge is no sink of the outbox
        # counted once the screen's POST has returned, which is after the screen has the body
        assert _until(lambda: svc.status()["nudge"]["sent"] == {"mqtt": 0, "webhook": 1}), svc.status()["nudge"]
    finally:
        svc.close()
        hook.close()
        screen.close()


def test_an_early_nudge_goes_to_the_screen_before_any_alert_and_stores_nothing(tmp_path):
    """A rule's early draft (a bag under way) is routed by the evaluation to the nudge alone: the screen
    gets it with early true and the item's track, the outbox stays empty; the alert's nudge names the item too."""
    screen = _Hook()
    svc = _service(tmp_path, nudge={"webhook": screen.url})
    try:
        svc.evaluator._raise([{**_draft(0), "early": True}], SimpleNamespace(name="lane1", stream=None), 10.0)
        assert _until(lambda: len(screen.got) == 1)
        early = screen.got[0]
        assert early["early"] is True and early["item"] == TRACK and early["images"] == [] and svc.outbox.counts()["stored"] == 0
        alert, _ = svc.raise_alert(_draft(0), stream="lane1", ring=_ring())
        assert _until(lambda: len(screen.got) == 2)
        assert screen.got[1]["early"] is False and screen.got[1]["item"] == TRACK and screen.got[1]["id"] == alert.id
        assert svc.status()["nudge"]["early"] == 1
    finally:
        svc.close()
        screen.close()


def test_a_nudge_that_fails_loses_no_alert(tmp_path):
    svc = _service(tmp_path, nudge={"webhook": "http://127.0.0.1:9/nudge", "timeout_s": 0.2})  # nothing listens
    try:
        alerts = [svc.raise_alert(_draft(i), stream="lane1", ring=_ring(seconds=2))[0] for i in range(3)]
        assert all(svc.outbox.get(a.id) is not None for a in alerts)
        assert _until(lambda: svc.nudger.failed["webhook"] == 3) and svc.status()["nudge"]["last_error"]
    finally:
        svc.close()


@needs_broker
def test_the_nudge_is_published_at_qos_0_and_is_not_in_the_outbox(tmp_path):
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker").start()
    got: list = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nudge-test")
    sub.on_message = lambda _c, _u, msg: got.append(msg)
    sub.on_connect = lambda c, *_: c.subscribe("lvm-edge/shop/+/nudges", qos=1)  # the message's QoS is min(both)
    host, port = broker.url.split("//")[1].split(":")
    sub.connect(host, int(port))
    sub.loop_start()
    svc = _service(tmp_path, mqtt={"url": broker.url, "keepalive_s": 5})
    try:
        svc.open_lanes(["lane1"])
        assert _until(lambda: svc.mqtt.connected and sub.is_connected())
        import time

        time.sleep(0.3)  # the subscription is made in on_connect: let it reach the broker
        alert, _ = svc.raise_alert(_draft(0), stream="lane1", ring=_ring(seconds=2))
        assert _until(lambda: got)
        msg = got[0]
        assert msg.topic == "lvm-edge/shop/lane1/nudges" and msg.qos == 0
        assert json.loads(msg.payload)["id"] == alert.id
        assert list(svc.outbox.pending()) == ["mqtt"]  # the alert's own delivery: the only queue
        assert _until(lambda: svc.outbox.pending()["mqtt"] == 0)
    finally:
        svc.close()
        sub.loop_stop()
        sub.disconnect()
        broker.stop()


@pytest.fixture(scope="module")
def evidence_stream(shipped_engine):
    """A stream of the shipped bundle keeping item crops in a small ring, fed 40 s of a busy checkout
    as a camera's intake feeds it: each frame at the model's size, with the camera's view (rendered at
    VIEW_SIDE px) offered first."""
    from edge_runtime.checkout import CheckoutVideo, heldout_video
    from edge_runtime.engine.frame_views import VIEW_SIDE
    from edge_runtime.sources.frames import resize_square

    eng = shipped_engine
    if eng.events is None:
        pytest.skip("the shipped bundle has no event head")
    seed, look = heldout_video(0, 0)
    frames = list(CheckoutVideo(seed, 40.0, size=VIEW_SIDE, look=look, shrink="0.3,0.3,0.1").frames(eng.intake_fps))
    st = eng.new_stream()
    st.keep_evidence("item", 120_000)
    for k in range(0, len(frames), eng.intake_batch):
        chunk = frames[k:k + eng.intake_batch]
        for t, view in chunk:
            st.offer_view(t, view)
        eng.ingest(st, np.stack([resize_square(f, eng.frame_size) for _, f in chunk]), np.asarray([t for t, _ in chunk]))
    return eng, st


def test_crops_are_cut_from_the_cameras_view(evidence_stream):
    """With the camera's view offered, an item's crop is larger than any crop of the model's 112 px
    frame could be (an item there is a few dozen pixels), and at most the ring's ITEM_SIDE."""
    import cv2

    from edge_runtime.items.evidence_ring import ITEM_SIDE

    eng, st = evidence_stream
    sides = [max(cv2.imdecode(np.frombuffer(c.jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]) for c in st.evidence.crops]
    assert sides and max(sides) > eng.frame_size and max(sides) <= ITEM_SIDE, sides


def test_the_event_path_keeps_crops_of_its_tracks_within_the_bound(evidence_stream):
    from edge_runtime.query.item_events import item_events

    eng, st = evidence_stream
    ring = st.evidence
    assert ring.taken > 0 and 0 < ring.nbytes <= 120_000 and st.status()["evidence"]["bytes"] == ring.nbytes
    tracks = {c.tracks[0] for c in ring.crops}
    events = [e for e in item_events(eng, st, (0.0, 40.0)) if e.item in tracks]
    assert events, "no item event of a track with crops in the ring"
    assert ring.pick(events[-1].item, events[-1].start, events[-1].end)
    st.keep_evidence("off", 0)
    assert st.evidence is None

