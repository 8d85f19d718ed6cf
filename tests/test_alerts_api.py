"""Alerts through the runtime: GET /v1/alerts and POST /v1/alerts/{id}/ack on the FastAPI app, the
alerts section of /v1/status and /metrics, and the commit hook (each commit of a stream evaluates its
rules on what happened since the last evaluation, off the intake thread)."""
import time

from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from fakes import FakeSource, one_line_error


def _draft(i: int, product: str = "milk_carton") -> dict:
    return {"rule": "bagged_without_scan", "product": product, "start": 60.0 * i, "end": 60.0 * i + 3,
            "confidence": 0.6, "box": None, "evidence": [{"activity": "bag", "product": product}]}


def test_without_alerts_the_list_is_empty_and_says_why(lane_app):
    client, _, _ = lane_app
    assert client.get("/v1/alerts").json() == {"alerts": [], "enabled": False, "note": "alerts: no rules configured",
                                               "next_before": None}
    assert client.get("/v1/status").json()["alerts"] == {"enabled": False, "note": "alerts: no rules configured"}
    assert "no alert with id 'x'" in one_line_error(client.post("/v1/alerts/x/ack"), 404)


def test_list_filter_page_and_ack(lane_app, tmp_path):
    client, hub, _ = lane_app
    svc = hub.alerts = AlertService(AlertSettings.model_validate({"site": "shop", "rules": {"bagged_without_scan": {}}}),
                                    tmp_path / "state", registry=hub.metrics.registry, evaluate=False)
    try:
        raised = [svc.raise_alert(_draft(i), stream="lane1" if i % 2 else "lane2", stream_time=60.0 * i + 8)[0]
                  for i in range(5)]
        body = client.get("/v1/alerts").json()
        assert [a["id"] for a in body["alerts"]] == [a.id for a in reversed(raised)]  # newest first
        assert body["enabled"] is True and body["next_before"] is None
        assert body["alerts"][0]["site"] == "shop" and body["alerts"][0]["stream_time"] == 4 * 60.0 + 8
        lane1 = client.get("/v1/alerts", params={"stream": "lane1"}).json()["alerts"]
        assert [a["id"] for a in lane1] == [raised[3].id, raised[1].id]
        # lane1 and lane2 are no streams of this run (removed lanes): their alerts stay listable; a name
        # that neither a stream nor an alert has is a 404, not "no alerts"
        assert "no stream named 'lane9'" in one_line_error(client.get("/v1/alerts", params={"stream": "lane9"}), 404)
        assert client.get("/v1/alerts", params={"stream": "lane1", "status": "acked"}).json()["alerts"] == []
        page = client.get("/v1/alerts", params={"limit": 2}).json()
        assert len(page["alerts"]) == 2 and page["next_before"] is not None
        rest = client.get("/v1/alerts", params={"limit": 2, "before": page["next_before"]}).json()["alerts"]
        assert [a["id"] for a in rest] == [raised[2].id, raised[1].id]
        acked = client.post(f"/v1/alerts/{raised[1].id}/ack")
        assert acked.status_code == 200 and acked.json()["status"] == "acked" and acked.json()["acked_at"] > 0
        again = client.post(f"/v1/alerts/{raised[1].id}/ack").json()
        assert again == acked.json()  # idempotent: the first acknowledgement stands
        assert [a["id"] for a in client.get("/v1/alerts", params={"status": "acked"}).json()["alerts"]] == [raised[1].id]
        assert len(client.get("/v1/alerts", params={"status": "open"}).json()["alerts"]) == 4
        assert client.get("/v1/alerts", params={"since": time.time() + 60}).json()["alerts"] == []
        for bad in ({"status": "closed"}, {"limit": 0}, {"limit": 501}, {"since": "soon"}, {"before": -1}):
            one_line_error(client.get("/v1/alerts", params=bad), 422)
        one_line_error(client.post("/v1/alerts/nope/ack"), 404)
        st = client.get("/v1/status").json()["alerts"]
        assert st["enabled"] is True and st["stored"] == 5 and st["open"] == 4 and st["pending"] == 0
        assert st["rules"] == ["bagged_without_scan"] and st["sinks"] == [] and st["broker"] is None
        metrics = client.get("/metrics").text
        assert 'lvm_alerts_raised_total{rule="bagged_without_scan",stream="lane1"} 2.0' in metrics
        spec = client.get("/openapi.json").json()
        assert {"get"} <= set(spec["paths"]["/v1/alerts"]) and "post" in spec["paths"]["/v1/alerts/{alert_id}/ack"]
        assert {"id", "rule", "stream", "evidence", "status", "acked_at"} <= set(spec["components"]["schemas"]["Alert"]["properties"])
    finally:
        svc.close()
        hub.alerts = None


class _Rules:
    """A stand-in RuleEngine: one alert per event it has not seen, and a record of what it was given."""
    made: list = []

    def __init__(self, rules, activities, scans="vision"):
        self.rules, self.activities, self.calls, self.seen = rules, activities, [], set()
        type(self).made.append(self)

    def evaluate(self, events, now, pos_scans=(), entering=()):
        self.calls.append((list(events), now))
        out = []
        for e in events:
            if (e["product"], e["start"]) not in self.seen:
                self.seen.add((e["product"], e["start"]))
                out.append({"rule": "bagged_without_scan", "product": e["product"], "start": e["start"],
                            "end": e["start"] + 2, "confidence": 0.9, "box": None, "evidence": [e]})
        return out


def test_each_commit_evaluates_the_rules_on_what_happened_since_the_last_one(lane_app, tmp_path, monkeypatch):
    from edge_runtime import sources

    client, hub, rt = lane_app
    windows = []

    def events(runtime, window):  # one event per window, at its end, of a product of its own
        windows.append(window)
        return [{"activity": "bag", "product": f"item {len(windows)}", "start": window[1] - 1.0, "end": window[1]}]

    _Rules.made = []
    hub.alerts = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {"min_confidence": 0.7}},
                                                            "streams": {"default": {"bagged_without_scan": {"lookback_s": 30}}}}),
                              tmp_path / "state", registry=hub.metrics.registry, rule_engine=_Rules, events=events)
    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: FakeSource(40))
    try:
        rt.start("fake://40")
        assert rt.wait(60)
        assert hub.alerts.wait_idle(30)
        (eng,) = _Rules.made
        assert eng.rules == {"bagged_without_scan": {"min_confidence": 0.7, "lookback_s": 30}}
        assert eng.activities == rt.engine.event_activities
        assert windows[0][0] == 0.0 and all(b > a for a, b in windows)
        for (_, prev_end), (start, _) in zip(windows, windows[1:]):  # each reads on from the last, with overlap
            assert start <= prev_end
        # the shipped bundle's event path: the rules read on to the newest frame (the memory's end without one)
        end = rt.stream.last_input if rt.stream.items is not None else rt.stream.coverage["end"]
        assert windows[-1][1] == end
        alerts = client.get("/v1/alerts").json()["alerts"]
        assert len(alerts) == len(windows) and alerts[0]["stream"] == "default"
        assert alerts[0]["stream_time"] == end
        assert client.get("/v1/status").json()["alerts"]["evaluations"] == len(windows)
    finally:
        hub.alerts.close()
        hub.alerts = None


def test_a_failing_rule_evaluation_does_not_stop_the_stream(lane_app, tmp_path, monkeypatch):
    from edge_runtime import sources

    client, hub, rt = lane_app

    def broken(runtime, window):
        raise RuntimeError("the reader fell over")

    hub.alerts = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {}}}), tmp_path / "state",
                              registry=hub.metrics.registry, rule_engine=_Rules, events=broken)
    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: FakeSource(24))
    try:
        rt.start("fake://24")
        assert rt.wait(60) and rt.state.value == "ended" and rt.error is None
        st = _until(lambda: (s := client.get("/v1/status").json()["alerts"])["last_error"] and s, 10)
        assert "rule evaluation failed: RuntimeError: the reader fell over" in st["last_error"]
        assert "lvm_alerts_evaluation_errors_total" in client.get("/metrics").text
    finally:
        hub.alerts.close()
        hub.alerts = None


def test_the_hook_reads_real_events_from_what_happened(lane_app, tmp_path, monkeypatch):
    from edge_runtime import sources
    from edge_runtime.alerts.rules import RuleEngine

    client, hub, rt = lane_app
    made = []

    def rules(spec, activities, scans="vision"):
        made.append(RuleEngine(spec, activities, scans))
        return made[-1]

    hub.alerts = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {}}}), tmp_path / "state",
                              registry=hub.metrics.registry, rule_engine=rules)
    monkeypatch.setattr(sources, "open_source", lambda uri, **kw: FakeSource(16))
    try:
        rt.start("fake://16")
        assert rt.wait(60)
        assert hub.alerts.wait_idle(60)
        st = hub.alerts.status()
        assert st["evaluations"] >= 1 and st["last_error"] is None and st["note"] is None, st
        assert len(made) == 1
    finally:
        hub.alerts.close()
        hub.alerts = None


def _until(cond, timeout: float):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    return cond()


def test_a_restored_memory_is_evaluated_from_its_last_15_minutes_then_on_with_overlap(tmp_path):
    from edge_runtime.alerts.service import FIRST_LOOKBACK_S, OVERLAP_S

    class Lane:  # a stream restored with an hour of memory
        name, wall_origin = "lane1", None

        class engine:
            labels = event_activities = ["scan", "bag"]

        class stream:
            coverage = {"start": 0.0, "end": 3600.0}

    windows = []
    svc = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {}}}), tmp_path / "state",
                       evaluate=False, rule_engine=_Rules, events=lambda rt, w: windows.append(w) or [])
    try:
        svc.evaluate(Lane)
        Lane.stream.coverage = {"start": 0.0, "end": 3616.0}
        svc.evaluate(Lane)
        assert windows == [(3600.0 - FIRST_LOOKBACK_S, 3600.0), (3600.0 - OVERLAP_S, 3616.0)]
    finally:
        svc.close()


def test_a_waiting_bag_is_judged_between_commits_at_the_streams_time(tmp_path):
    """The evaluation thread's tick: a bag that waits settle_s is judged once the stream's newest frame
    passes its due time, without another commit; the alert carries that stream time."""
    from edge_runtime.alerts.rules import RuleEngine
    from edge_runtime.query.events import Event

    class Lane:
        name, wall_origin, stream_now = "lane1", None, 40.0

        class engine:
            labels = event_activities = ["scan", "bag"]

        class stream:
            coverage = {"start": 0.0, "end": 40.0}

    bag = Event("bag", 1, "wine_bottle", 35.0, 38.0, 0.9, (0.1, 0.1, 0.2, 0.2), ("memory",))
    svc = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {"settle_s": 6}}}),
                       tmp_path / "state", evaluate=False, rule_engine=lambda r, a, s: RuleEngine(r, a, s),
                       events=lambda rt, w: [bag])
    try:
        assert svc.evaluate(Lane) == []                 # the commit at 40 s: the bag waits until 44 s
        assert svc.tick(Lane) == []                     # 40 s: not due
        Lane.stream_now = 44.5
        got = svc.tick(Lane)
        assert [(a.product, a.stream_time) for a in got] == [("wine_bottle", 44.5)]
        assert svc.tick(Lane) == []                     # judged once
    finally:
        svc.close()
    # the evaluation thread ticks by itself: one commit, then the stream's time passes the due time
    Lane.stream_now = 40.0
    svc = AlertService(AlertSettings.model_validate({"rules": {"bagged_without_scan": {"settle_s": 6}}}),
                       tmp_path / "state2", rule_engine=lambda r, a, s: RuleEngine(r, a, s), events=lambda rt, w: [bag])
    try:
        svc.committed(Lane)
        assert svc.wait_idle(10.0) and svc.list() == []
        Lane.stream_now = 45.0
        deadline = time.time() + 10.0
        while not svc.list() and time.time() < deadline:
            time.sleep(0.05)
        assert [a.product for _, a in svc.list()] == ["wine_bottle"]
    finally:
        svc.close()
