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
from edge_runtime.alerts.settings import AlertSettings
from fakes import alerts_on, one_line_error, serve_app

OLD_OUTBOX = Path(__file__).parent / "data" / "alerts_outbox_before_verdicts.sql"


def _draft(i: int, product: str = "milk_carton", rule: str = "bagged_without_scan", box=None) -> dict:
    return {"rule": rule, "product": product, "start": 60.0 * i + 10, "end": 60.0 * i + 13.5,
            "confidence": 0.8, "box": box, "evidence": [{"activity": "bag", "product": product}]}


@pytest.fixture
def alerts_app(lane_app, tmp_path):
    """lane_app with an alert service (no evaluation thread: alerts come through raise_alert);
    precision over the last 3 verdicts."""
    client, hub, rt = lane_app
    with alerts_on(hub, {"site": "shop", "rules": {"bagged_without_scan": {}}, "precision_verdicts": 3},
                   tmp_path / "state") as svc:
        yield client, svc


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
            assert a.model_dump(exclude={"verdicts", "images", "p_right", "held", "cleared"}) == body and a.images == []  # no evidence then
            assert a.cleared is None
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


def _clip(path: Path, seconds: float) -> None:
    """A small stand-in for the footage a store would cut from its recorder: grey frames at 1 fps."""
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 1.0, (32, 32))
    for _ in range(round(seconds)):
        w.write(np.full((32, 32, 3), 128, np.uint8))
    w.release()


def test_lvm_data_verdicts_writes_an_annotation_set_and_the_footage_it_needs(tmp_path, capsys):
    from export.cli.data import main
    from export.dataset import check_dataset, open_dataset

    box = Outbox(tmp_path / "state", sinks=["mqtt"])
    raised = [from_draft(_draft(1, box=[0.2, 0.3, 0.4, 0.6]), site="shop", stream="lane1", stream_time=80.0,
                         wall_origin=1795500000.0, now=1795500090.0),
              from_draft(_draft(2, "Oat milk 1L", rule="pass_around", box=[0.5, 0.5, 0.7, 0.8]), site="shop",
                         stream="lane2", stream_time=140.0, now=1795500150.0),
              from_draft(_draft(3, "banana"), site="shop", stream="lane1", stream_time=200.0, now=1795500210.0),
              from_draft(_draft(4, "bread"), site="shop", stream="lane1", stream_time=260.0, now=1795500270.0)]
    for a in raised:
        box.add(a)
    for a, outcome in zip(raised, ("confirmed", "customer_fixed", "false_alert")):
        box.ack(a.id, Verdict(outcome=outcome, at=1795501000.0, note="checked" if outcome == "confirmed" else None))
    db_bytes = (tmp_path / "state" / "alerts.db").read_bytes()
    out = tmp_path / "verdicts"
    # the runtime still holds its store open: the export reads it beside it, read-only
    assert main(["verdicts", "--state-dir", str(tmp_path / "state"), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "3 items" in said and "1 confirmed, 1 customer_fixed, 1 false_alert" in said
    assert (tmp_path / "state" / "alerts.db").read_bytes() == db_bytes
    listing = json.loads((out / "verdicts.json").read_text())
    items = {e["alert_id"]: e for e in listing["items"]}
    assert set(items) == {a.id for a in raised[:3]}  # the alert without a verdict is not exported
    first = items[raised[0].id]
    assert (first["outcome"], first["activity"], first["note"], first["evidence"]) == ("confirmed", "bag", "checked", [])
    # the footage: 20 s each side of the alert (70-73.5 s), and for a live camera its wall time
    assert first["footage"] == {"stream": "lane1", "start": 50.0, "end": 93.5, "wall_start": 1795500050.0,
                                "wall_end": 1795500093.5, "file": f"videos/{first['stem']}.<ext>"}
    assert items[raised[1].id]["footage"]["wall_start"] is None  # not a live camera: stream seconds only
    ann = json.loads((out / "annotations" / f"{first['stem']}.json").read_text())
    assert ann["version"] == 3 and ann["duration_s"] == 43.5 and ann["negatives"] == []
    assert ann["events"] == [{"activity": "bag", "instance_id": 0, "start": 20.0, "end": 23.5}]
    assert ann["instances"] == [{"instance_id": 0, "product": "milk_carton", "scanned": False,
                                 "shrink": "bagged_unscanned"}]
    assert ann["boxes"] == {"0": [[21.75, 0.2, 0.3, 0.4, 0.6]]}
    false = json.loads((out / "annotations" / f"{items[raised[2].id]['stem']}.json").read_text())
    assert false["events"] == [] and false["negatives"] == [{"activity": "bag", "instance_id": 0, "start": 20.0,
                                                              "end": 23.5}]
    # the store adds the footage; the folder then checks and opens as any dataset, negatives labelled
    assert sorted(str(p) for p in check_dataset(out, decode=False)) == sorted(
        f"annotations/{e['stem']}.json: no video videos/{e['stem']}.* for it" for e in listing["items"])
    for e in listing["items"]:
        _clip(out / "videos" / f"{e['stem']}.avi", e["footage"]["end"] - e["footage"]["start"])
    assert [str(p) for p in check_dataset(out)] == []
    ds = open_dataset(out)
    assert "pass_around" in ds.labels.activities and "Oat milk 1L" in ds.labels.objects
    by_stem = {it.stem: it.annotations for it in ds.items}
    neg = by_stem[items[raised[2].id]["stem"]]["negatives"]
    assert [(n["activity"], n["activity_id"]) for n in neg] == [("bag", ds.labels.activities.index("bag"))]
    passed = by_stem[items[raised[1].id]["stem"]]
    assert [e["activity"] for e in passed["events"]] == ["pass_around"]
    # a verdict changed later: exported again, the item follows it (the last verdict counts)
    box.ack(raised[0].id, Verdict(outcome="false_alert", at=1795502000.0))
    box.close()
    assert main(["verdicts", "--state-dir", str(tmp_path / "state"), "--out", str(out)]) == 0
    ann = json.loads((out / "annotations" / f"{first['stem']}.json").read_text())
    assert ann["events"] == [] and len(ann["negatives"]) == 1
    assert len(json.loads((out / "verdicts.json").read_text())["items"]) == 3


@pytest.mark.parametrize("setup,argv,code,said", [
    (None, ["--pad", "-1"], 2, "--pad -1: must be a number of seconds >= 0"),
    (None, [], 1, "alerts.db: no such file"),
    ("old", [], 1, "no alert has a verdict yet"),
    ("labels", [], 1, "labels.yaml: objects: milk_carton not listed"),
])
def test_lvm_data_verdicts_bad_input_is_one_line(tmp_path, capsys, setup, argv, code, said):
    from export.cli.data import main

    state, out = tmp_path / "state", tmp_path / "out"
    if setup == "old":  # an outbox from before verdicts: no verdict to export
        state.mkdir()
        db = sqlite3.connect(state / "alerts.db")
        db.executescript(OLD_OUTBOX.read_text())
        db.close()
    if setup == "labels":
        box = Outbox(state)
        box.add(from_draft(_draft(1), site="shop", stream="lane1", stream_time=80.0))
        box.ack(box.list()[0][1].id, Verdict(outcome="confirmed", at=1.0))
        box.close()
        out.mkdir()
        (out / "labels.yaml").write_text("version: 1\nactivities: [bag]\nobjects: [banana]\n")
    assert main(["verdicts", "--state-dir", str(state), "--out", str(out), *argv]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err, err
    assert not (out / "verdicts.json").exists()


def test_a_bad_negative_is_named_by_its_field():
    from export.dataset import LabelSet
    from export.dataset.check import annotation_problems

    ann = {"version": 3, "duration_s": 40.0, "instances": [{"instance_id": 0, "product": "banana"}], "events": [],
           "negatives": [{"activity": "bagg", "instance_id": 0, "start": 5.0, "end": 9.0},
                         {"activity": "bag", "instance_id": 3, "start": 9.0, "end": 5.0}]}
    assert annotation_problems(ann, LabelSet.generator(), Path(".")) == [
        ("negatives[0].activity", "'bagg' not in labels.yaml activities"),
        ("negatives[1].instance_id", "3 is not an instance in instances"),
        ("negatives[1].end", "5.0 <= start 9.0")]
