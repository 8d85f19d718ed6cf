"""The till's scans (``alerts.scans: pos``): the store (edge_runtime/alerts/pos_scans.py), POST
/v1/streams/{stream}/scans, and the evaluation handing them to the rules."""
import time

import pytest

from edge_runtime.alerts.pos_scans import DB_NAME, PosScans
from edge_runtime.alerts.rules import KEEP_S
from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from fakes import one_line_error as _error


def test_the_store_keeps_each_scan_once_across_restarts_and_stays_bounded(tmp_path):
    till = PosScans(tmp_path)
    assert till.add("lane1", [("apple", 10.0), ("milk_carton", 12.5)], now=13.0) == 2
    assert till.add("lane1", [("apple", 10.0)], now=13.0) == 0            # sent again: kept once
    assert till.add("lane2", [("apple", 10.0)], now=13.0) == 1            # another lane's
    till.close()
    till = PosScans(tmp_path)                                   # a restart on the same state dir
    got = till.recent("lane1", since=0.0)
    assert [(e.product, e.start, e.end, e.activity, e.confidence) for e in got] == [
        ("apple", 10.0, 10.0, "scan", 1.0), ("milk_carton", 12.5, 12.5, "scan", 1.0)]
    assert [e.product for e in till.recent("lane1", since=11.0)] == ["milk_carton"]
    # a read from a till whose clock is an hour ahead pushes nothing out: the horizon is the stream's
    assert till.add("lane1", [("bread", 3600.0)], now=14.0) == 1
    assert [e.product for e in till.recent("lane1", since=0.0)] == ["apple", "milk_carton", "bread"]
    # the stream hours later: the old ones go; a read older than KEEP_S before it is not kept
    now = 12.5 + KEEP_S + 1
    assert till.add("lane1", [("soda_can", now - 1), ("cheese", now - KEEP_S - 1)], now=now) == 1
    assert [e.product for e in till.recent("lane1", since=0.0)] == ["soda_can", "bread"]
    assert till.count("lane2") == 1
    till.close()


def test_a_damaged_store_is_set_aside_with_one_warning(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not a database" * 100)
    said = []
    till = PosScans(tmp_path, warn=said.append)
    assert len(said) == 1 and "set aside" in said[0] and "till scans start afresh" in said[0]
    assert till.add("lane1", [("apple", 1.0)], now=1.0) == 1
    till.close()


def test_a_runtime_config_with_pos_scans_checks_rules_against_them():
    s = AlertSettings.model_validate({"scans": "pos", "rules": {"pass_around": {}}})
    s.check_rules(["pick_up", "scan", "bag"], ["lane1"])     # pass_around runs on the scan events
    with pytest.raises(ValueError, match="needs the activity pass_around"):
        AlertSettings.model_validate({"rules": {"pass_around": {}}}).check_rules(["pick_up", "scan", "bag"], [])
    with pytest.raises(ValueError, match="scans"):
        AlertSettings.model_validate({"scans": "till"})


def test_post_scans_stores_them_and_says_what_it_cannot_name(lane_app, tmp_path):
    client, hub, rt = lane_app
    url = f"/v1/streams/{rt.name}/scans"
    assert "does not take the till's scans" in _error(client.post(url, json={"scans": [{"product": "apple",
                                                                                      "stream_time": 3}]}), 409)
    assert "does not take the till's scans" in _error(client.get(url), 409)
    svc = hub.alerts = AlertService(AlertSettings.model_validate({"scans": "pos", "rules": {"bagged_without_scan": {}}}),
                                    tmp_path / "state", registry=hub.metrics.registry, evaluate=False)
    try:
        sent_at = time.time()
        r = client.post(url, json={"scans": [{"product": "milk_carton", "stream_time": 12.5},
                                             {"product": "SKU-000123", "stream_time": 14.0}]})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["received"] == 2 and body["new"] == 2 and body["unknown_products"] == ["SKU-000123"]
        assert "SKU-000123" in body["note"] and "\n" not in body["note"]
        assert client.post(url, json={"scans": [{"product": "milk_carton", "stream_time": 12.5}]}).json()["new"] == 0
        assert [(e.product, e.start) for e in svc.pos.recent(rt.name, 0.0)] == [("milk_carton", 12.5), ("SKU-000123", 14.0)]
        held = client.get(url).json()
        assert held == {"stream": rt.name, "scans": [{"product": "milk_carton", "stream_time": 12.5, "time": None},
                                                     {"product": "SKU-000123", "stream_time": 14.0, "time": None}]}
        st = client.get("/v1/status").json()["alerts"]
        assert st["scans"] == "pos" and st["pos_scans_received"] == 2 and sent_at <= st["pos_scans_last_at"] <= time.time()
        assert f'lvm_alerts_pos_scans_total{{stream="{rt.name}"}} 2.0' in client.get("/metrics").text
        # a file or demo stream has no wall clock: a unix time cannot be placed on it
        assert "no wall clock" in _error(client.post(url, json={"scans": [{"product": "apple", "time": 1.8e9}]}), 422)
        # a live camera not yet streaming (down since a power cut): its clock starts with its first frame
        before, rt.source_uri = rt.source_uri, "rtsp://127.0.0.1:1/x"
        assert "has not delivered a frame yet" in _error(client.post(url, json={"scans": [{"product": "apple",
                                                                                           "time": 1.8e9}]}), 409)
        rt.source_uri = before
        rt.stream.clock.first_frame(0.0, live=True, captured=1.8e9 - 100.0)   # a live camera's stream time 0
        assert "milliseconds?" in _error(client.post(url, json={"scans": [{"product": "apple", "time": 1.8e12}]}), 422)
        assert client.post(url, json={"scans": [{"product": "apple", "time": 1.8e9}]}).status_code == 202
        assert ("apple", 100.0) in [(e.product, e.start) for e in svc.pos.recent(rt.name, 0.0)]
        assert "ahead of the stream" in _error(client.post(url, json={"scans": [{"product": "apple", "stream_time": 1e308}]}), 422)
        assert svc.pos.count(rt.name) == 3   # nothing stored was pushed out
        # a read half an hour ahead (within the hour a read may lead the stream) pushes nothing out either
        assert client.post(url, json={"scans": [{"product": "apple", "stream_time": 1800.0}]}).json()["new"] == 1
        assert svc.pos.count(rt.name) == 4
        # a backlog: the reads the rules still read are kept, the older ones counted and named in the note
        rt.stream.clock.received(1000.0 + KEEP_S)
        r = client.post(url, json={"scans": [{"product": "bread", "stream_time": 999.0},
                                             {"product": "bread", "stream_time": 1001.0}]})
        assert r.status_code == 202 and (r.json()["new"], r.json()["too_old"]) == (1, 1), r.text
        assert "not kept" in r.json()["note"] and ("bread", 999.0) not in [(e.product, e.start) for e in svc.pos.recent(rt.name, 0.0)]
        rt.stream.clock.received(0.0)   # back at the stream's start: the reads below are not too old
        for bad in ({"scans": []}, {"scans": [{"product": "apple"}]},
                    {"scans": [{"product": "apple", "time": 1.8e9, "stream_time": 3}]},
                    {"scans": [{"product": "", "stream_time": 3}]}, {"scans": [{"product": "a", "stream_time": -1}]},
                    {"scans": [{"product": "a", "stream_time": 1, "price": 3}]}, {"product": "apple"},
                    {"scans": [{"product": "   ", "stream_time": 3}]}, {"scans": [{"product": "a\u0000", "stream_time": 3}]},
                    {"scans": [{"product": "a", "stream_time": "1"}]}, {"scans": [{"product": "a", "stream_time": True}]}):
            _error(client.post(url, json=bad), 422)
        # the till's spelling of a bundle class (case, spacing, "_" aside) is stored as the name events carry
        r = client.post(url, json={"scans": [{"product": " Milk  Carton ", "stream_time": 30.0}]}).json()
        assert r["unknown_products"] == [] and ("milk_carton", 30.0) in [(e.product, e.start)
                                                                           for e in svc.pos.recent(rt.name, 0.0)]
        assert "no stream" in _error(client.post("/v1/streams/nope/scans",
                                                 json={"scans": [{"product": "a", "stream_time": 1}]}), 404).lower()
    finally:
        svc.close()
        hub.alerts = None


def test_each_evaluation_hands_the_rules_the_tills_scans_of_the_last_minutes(tmp_path):
    seen = []

    class Rules:
        def __init__(self, rules, activities, scans="vision"):
            self.scans = scans

        def evaluate(self, events, now, pos_scans=(), entering=()):
            seen.append((self.scans, now, [(e.product, e.start) for e in pos_scans]))
            return []

    class Lane:
        name = "lane1"

        class engine:
            labels = event_activities = ["scan", "bag"]

        class stream:
            coverage = {"start": 0.0, "end": 2000.0}

    svc = AlertService(AlertSettings.model_validate({"scans": "pos", "rules": {"bagged_without_scan": {}}}),
                       tmp_path, evaluate=False, rule_engine=Rules, events=lambda rt, w: [])
    try:
        svc.add_pos_scans("lane1", [("apple", 2000.0 - KEEP_S - 5), ("soda_can", 1990.0)], now=1500.0)
        svc.add_pos_scans("lane2", [("cheese", 1995.0)], now=2000.0)
        svc.evaluate(Lane)
        assert seen == [("pos", 2000.0, [("soda_can", 1990.0)])]
    finally:
        svc.close()


def test_a_demo_stream_brings_its_tills_scans_and_the_real_rules_judge_against_them(lane_app, tmp_path):
    """demo:// through the runtime with ``scans: pos``: every good read of its checkout reaches the store
    in stream time, and the rules run on them with the pass-around rule the 8-activity bundle lacks
    without them."""
    from edge_runtime.checkout import CheckoutVideo
    from edge_runtime.checkout.shrink import pos_scans

    client, hub, rt = lane_app
    hub.alerts = AlertService(AlertSettings.model_validate({"scans": "pos", "rules": {"bagged_without_scan": {},
                                                                                       "pass_around": {}}}),
                              tmp_path / "state", registry=hub.metrics.registry)
    try:
        rt.start("demo://checkout?seed=3&duration=120&shrink=0.3,0.3,0")
        assert rt.wait(300)
        assert hub.alerts.wait_idle(60)
        st = hub.alerts.status()
        assert st["evaluations"] >= 1 and st["last_error"] is None and st["note"] is None, st
        video = CheckoutVideo(3, duration_s=120.0, size=rt.engine.frame_size, shrink="0.3,0.3,0")
        reads = pos_scans(video.annotations())
        end = rt.stream.coverage["end"]
        want = [(p, t) for p, t in reads if t <= end]
        assert want, "the demo's first minutes scan something"
        assert [(e.product, e.start) for e in hub.alerts.pos.recent(rt.name, 0.0)] == want
        assert st["pos_scans_received"] == len(want)
        for a in client.get("/v1/alerts").json()["alerts"]:
            assert a["rule"] in ("bagged_without_scan", "pass_around") and a["stream"] == rt.name
    finally:
        hub.alerts.close()
        hub.alerts = None
