"""Staff's verdicts on alerts: POST /v1/alerts/{id}/ack with an outcome, kept in the outbox (an outbox
written before verdicts opened and migrated), each rule's precision per stream in /v1/status and
/metrics, `lvm-edge alerts ack --outcome`, and `lvm-data verdicts` (the verdicts as an own-footage
annotation set)."""
import json
import sqlite3
from pathlib import Path

import pytest

from edge_runtime.alerts.outbox import Outbox
from edge_runtime.alerts.record import Verdict, from_draft
from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from fakes import one_line_error, serve_app

OLD_OUTBOX = Path(__file__).parent / "data" / "alerts_outbox_before_verdicts.sql"


def _draft(i: int, product: str = "milk_carton", rule: str = "bagged_without_scan", box=None) -> dict:
    return {"rule": rule, "product": product, "start": 60.0 * i + 10, "end": 60.0 * i + 13.5,
            "confidence": 0.8, "box": box, "evidence": [{"activity": "bag", "product": product}]}


@pytest.fixture
def alerts_app(lane_app, tmp_path):
    """lane_app with an alert service (no evaluation thread: alerts come through raise_alert);
    precision over the last 3 verdicts."""
    client, hub, rt = lane_app
    settings = AlertSettings.model_validate({"site": "shop", "rules": {"bagged_without_scan": {}},
                                             "precision_verdicts": 3})
    hub.alerts = AlertService(settings, tmp_path / "state", registry=hub.metrics.registry, evaluate=False)
    try:
        yield client, hub.alerts
    finally:
        hub.alerts.close()
        hub.alerts = None


def _rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM alerts ORDER BY seq").fetchall()
    finally:
        db.close()


def test_an_outcome_is_kept_and_a_later_one_counts(alerts_app, tmp_path):
    client, svc = alerts_app
    a, b = (svc.raise_alert(_draft(i), stream="lane1")[0] for i in range(2))
    r = client.post(f"/v1/alerts/{a.id}/ack", json={"outcome": "confirmed", "note": "seen on camera 2", "by": "ana"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["status"] == "acked" and first["acked_at"] > 0
    assert [(v["outcome"], v["note"], v["by"]) for v in first["verdicts"]] == [("confirmed", "seen on camera 2", "ana")]
    listed = client.get("/v1/alerts", params={"status": "acked"}).json()["alerts"]
    assert [x["verdicts"] for x in listed] == [first["verdicts"]]
    # a later verdict replaces it as the one that counts; the first ack's time and the first verdict stay
    again = client.post(f"/v1/alerts/{a.id}/ack", json={"outcome": "false_alert"}).json()
    assert [v["outcome"] for v in again["verdicts"]] == ["confirmed", "false_alert"]
    assert again["acked_at"] == first["acked_at"] and again["verdicts"][0] == first["verdicts"][0]
    assert again["verdicts"][1]["at"] >= again["verdicts"][0]["at"]
    # the old call: no body acknowledges and records no outcome; again, it changes nothing
    plain = client.post(f"/v1/alerts/{b.id}/ack")
    assert plain.status_code == 200 and plain.json()["status"] == "acked" and plain.json()["verdicts"] == []
    assert client.post(f"/v1/alerts/{b.id}/ack", json={}).json() == plain.json()
    assert client.post(f"/v1/alerts/{a.id}/ack").json() == again
    # durable: another outbox on the same file reads them back
    box = Outbox(tmp_path / "state")
    try:
        assert box.get(a.id).outcome == "false_alert" and box.get(b.id).outcome is None
    finally:
        box.close()
    spec = client.get("/openapi.json").json()
    body_ref = spec["paths"]["/v1/alerts/{alert_id}/ack"]["post"]["requestBody"]
    assert body_ref.get("required") is not True  # the body stays optional for the old call


@pytest.mark.parametrize("path,body,status,said", [
    ("{id}", {"outcome": "maybe"}, 422, "outcome: 'maybe' is not an outcome: give confirmed, false_alert or customer_fixed"),
    ("{id}", {"outcome": 1}, 422, "give confirmed, false_alert or customer_fixed"),
    ("{id}", {"outcome": "confirmed", "note": "x" * 201}, 422, "note: String should have at most 200 characters"),
    ("{id}", {"note": "no outcome"}, 422, "note and by go with an outcome"),
    ("{id}", {"outcome": "confirmed", "who": "ana"}, 422, "unknown field 'who'"),
    ("nope", {"outcome": "confirmed"}, 404, "no alert with id 'nope'"),
])
def test_a_refused_ack_is_one_line_and_changes_nothing(alerts_app, tmp_path, path, body, status, said):
    client, svc = alerts_app
    alert = svc.raise_alert(_draft(0), stream="lane1")[0]
    before = _rows(tmp_path / "state" / "alerts.db")
    r = client.post(f"/v1/alerts/{path.format(id=alert.id)}/ack", json=body)
    assert said in one_line_error(r, status)
    assert _rows(tmp_path / "state" / "alerts.db") == before
    assert "lvm_alert_verdicts_total{" not in client.get("/metrics").text


def test_an_outbox_written_before_verdicts_keeps_every_alert(tmp_path):
    db = sqlite3.connect(tmp_path / "alerts.db")
    db.executescript(OLD_OUTBOX.read_text())
    old = {row[1]: (row[3], row[5], json.loads(row[6])) for row in db.execute("SELECT * FROM alerts")}
    db.close()
    assert len(old) == 3
    box = Outbox(tmp_path, sinks=["mqtt"])
    try:
        now = {a.id: a for _, a in box.list()}
        assert set(now) == set(old)
        for aid, (status, acked_at, body) in old.items():
            a = now[aid]
            assert (a.status, a.acked_at, a.verdicts) == (status, acked_at, [])
            assert a.model_dump(exclude={"verdicts"}) == body
        assert [a.id for _, a in box.due("mqtt")] == [a.id for _, a in box.list() if a.stream == "lane2"]
        assert box.rule_verdicts(50) == {}
        target = next(a for a in now.values() if a.status == "open")
        box.ack(target.id, Verdict(outcome="customer_fixed", at=1795513000.0))
        assert box.rule_verdicts(50) == {(target.stream, "bagged_without_scan"): {"customer_fixed": 1}}
    finally:
        box.close()
    again = Outbox(tmp_path, sinks=["mqtt"])  # opened a second time: nothing to migrate, nothing lost
    try:
        assert len(again.list()) == 3 and again.get(target.id).outcome == "customer_fixed"
    finally:
        again.close()


def test_precision_per_stream_and_rule_in_status_and_metrics(alerts_app):
    client, svc = alerts_app
    lane1 = [svc.raise_alert(_draft(i), stream="lane1")[0] for i in range(5)]
    svc.raise_alert(_draft(9, "banana"), stream="lane2")
    for alert, outcome in zip(lane1, ("false_alert", "false_alert", "customer_fixed", "false_alert", "confirmed")):
        assert client.post(f"/v1/alerts/{alert.id}/ack", json={"outcome": outcome}).status_code == 200
    # the 4th changes its mind: its last verdict counts, and it is the newest verdict
    client.post(f"/v1/alerts/{lane1[3].id}/ack", json={"outcome": "confirmed"})
    st = client.get("/v1/status").json()["alerts"]
    assert st["precision_verdicts"] == 3
    # the last 3 verdicts of lane1: customer_fixed (right), confirmed, confirmed (the 4th's new one)
    assert st["precision"]["lane1"]["bagged_without_scan"] == {
        "precision": 1.0, "verdicts": 3, "confirmed": 2, "false_alert": 0, "customer_fixed": 1}
    assert st["precision"]["lane2"]["bagged_without_scan"] == {
        "precision": None, "verdicts": 0, "confirmed": 0, "false_alert": 0, "customer_fixed": 0}
    # the default stream evaluates the rule too: listed with no verdicts
    assert st["precision"]["default"]["bagged_without_scan"]["verdicts"] == 0
    client.post(f"/v1/alerts/{lane1[2].id}/ack", json={"outcome": "false_alert"})
    st = client.get("/v1/status").json()["alerts"]["precision"]["lane1"]["bagged_without_scan"]
    assert st["precision"] == pytest.approx(2 / 3) and st["false_alert"] == 1
    metrics = client.get("/metrics").text
    assert f'lvm_alert_rule_precision{{rule="bagged_without_scan",stream="lane1"}} {2 / 3!r}' in metrics
    assert 'lvm_alert_rule_precision{rule="bagged_without_scan",stream="lane2"}' not in metrics
    assert 'lvm_alert_verdicts_total{outcome="false_alert",rule="bagged_without_scan",stream="lane1"} 4.0' in metrics
    assert 'lvm_alert_verdicts_total{outcome="confirmed",rule="bagged_without_scan",stream="lane1"} 2.0' in metrics


@pytest.mark.parametrize("value", [0, 10_001, "many"])
def test_the_precision_window_is_validated(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        AlertSettings.model_validate({"rules": {"bagged_without_scan": {}}, "precision_verdicts": value})
    assert err.value.errors()[0]["loc"] == ("precision_verdicts",)


def test_cli_ack_with_an_outcome(alerts_app, capsys):
    from edge_runtime.cli import main

    client, svc = alerts_app
    alert = svc.raise_alert(_draft(0), stream="lane1")[0]
    with serve_app(client.app) as where:
        assert main(["alerts", "ack", alert.id, "--outcome", "customer_fixed", "--note", "paid at the till",
                     "--api", where]) == 0
        assert capsys.readouterr().out.strip() == f"acked {alert.id} (bagged_without_scan, milk_carton, customer_fixed)"
        assert main(["alerts", "ack", "nope", "--outcome", "confirmed", "--api", where]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "HTTP 404: no alert with id 'nope'" in err
    v = svc.outbox.get(alert.id).verdicts
    assert [(x.outcome, x.note) for x in v] == [("customer_fixed", "paid at the till")]


@pytest.mark.parametrize("argv,said", [
    (["alerts", "ack", "abc", "--outcome", "maybe"], "invalid choice: 'maybe'"),
    (["alerts", "ack", "abc", "--note", "x"], "--note and --by go with --outcome"),
    (["alerts", "--outcome", "confirmed"], "--outcome only with ack ID"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "--outcome", "confirmed"], "only with ack ID, through a runtime's API"),
])
def test_cli_bad_verdict_is_one_line_and_exit_2(capsys, argv, said):
    from edge_runtime.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and said in err, err
