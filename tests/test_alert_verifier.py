"""Staff's verdicts learnt (edge_runtime/alerts/verifier.py): fitted per stream and rule from the
verdicts stored, saved as JSON and read back, and the gate that holds an alert staff would likely call
false (stored and listed, not sent or nudged); POST /v1/alerts/verifier and `lvm-edge alerts learn`."""
import json

import pytest

from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.alerts.verifier import FILE, Verifier, VerifierError, fit
from fakes import alerts_on, one_line_error, serve_app


def _draft(i: int, seconds: float, confidence: float = 0.6, rule: str = "pass_around") -> dict:
    """An alert of lane1's camera: the false ones of this lane are the instants (an item that only touched the
    scanner's area), as the verdicts below say."""
    return {"rule": rule, "product": "milk_carton", "start": 60.0 * i + 10, "end": 60.0 * i + 10 + seconds,
            "confidence": confidence, "box": [0.4, 0.4, 0.5, 0.55], "evidence": [{"activity": rule}]}


def _judged(n: int) -> list[tuple[str, dict, str]]:
    out = []
    for i in range(n):
        right = i % 3 != 0
        out.append(("lane1", _draft(i, 2.5 + (i % 5) * 0.3 if right else 0.1 * (i % 4), 0.55 + (i % 7) * 0.03),
                    "confirmed" if right else "false_alert"))
    return out


def test_fit_learns_the_lanes_false_alerts_and_round_trips(tmp_path):
    v = fit(_judged(45), min_verdicts=30, hold_below=0.5)
    assert set(v.pairs) == {("lane1", "pass_around")} and (v.pairs[("lane1", "pass_around")].right,
                                                           v.pairs[("lane1", "pass_around")].false) == (30, 15)
    assert v.p_right("lane1", _draft(99, 0.2)) < 0.2 < 0.8 < v.p_right("lane1", _draft(99, 3.0))
    # another lane, or another rule of this one, has no model: its alerts pass as before
    assert v.p_right("lane2", _draft(99, 0.2)) is None
    assert v.p_right("lane1", _draft(99, 0.2, rule="bagged_without_scan")) is None
    v.save(tmp_path)
    back = Verifier.load(tmp_path)
    assert back.p_right("lane1", _draft(99, 0.2)) == pytest.approx(v.p_right("lane1", _draft(99, 0.2)), abs=1e-12)
    # too few verdicts, or too few of one kind: no model, and the note says what it lacks
    few = fit(_judged(12) + [("lane2", _draft(i, 3.0), "confirmed") for i in range(40)], min_verdicts=30, hold_below=0.5)
    assert not few.pairs
    notes = few.summary()["pairs"]
    assert notes["lane1"]["pass_around"]["note"].startswith("12 verdicts (8 right, 4 false)")
    assert "0 false" in notes["lane2"]["pass_around"]["note"]
    # a rule that is mostly wrong on this lane, its right alerts no different from its false ones: the model
    # would hold its right alerts too, so it scores and holds none
    mostly_false = [("lane3", _draft(i, 1.0 + (i * 7 % 5) * 0.4), "confirmed" if i % 8 == 0 else "false_alert")
                    for i in range(48)]
    quiet = fit(mostly_false, min_verdicts=30, hold_below=0.5)
    p, held = quiet.judge("lane3", _draft(99, 1.4), 0.5)
    assert p < 0.5 and not held and quiet.summary()["pairs"]["lane3"]["pass_around"]["holds"] is False
    assert v.judge("lane1", _draft(99, 0.2), 0.5)[1] is True
    with pytest.raises(ValueError, match="'maybe' is not an outcome"):
        fit([("lane1", _draft(0, 1.0), "maybe")], min_verdicts=5, hold_below=0.5)


@pytest.mark.parametrize("text,said", [("{", "cannot be read"), ('{"format": "x"}', "not a verifier of this version"),
                                       (None, "is damaged")])
def test_a_damaged_file_is_one_line(tmp_path, text, said):
    if text is None:  # a model whose scale is 0: its numbers cannot be used
        d = json.loads(fit(_judged(45), min_verdicts=30, hold_below=0.5).to_json())
        d["pairs"][0]["scale"][0] = 0.0
        text = json.dumps(d)
    (tmp_path / FILE).write_text(text)
    with pytest.raises(VerifierError) as err:
        Verifier.load(tmp_path)
    assert said in str(err.value) and "\n" not in str(err.value)
    warned = []
    svc = AlertService(AlertSettings.model_validate({"rules": {"pass_around": {}}}), tmp_path, evaluate=False,
                       warn=warned.append)
    try:  # the runtime starts, warns once, and its alerts pass unverified (and by default none is held)
        assert svc.verifier is None and len(warned) == 1 and said in warned[0]
        alert, new = svc.raise_alert(_draft(0, 0.1), stream="lane1")
        assert new and alert.p_right is None and not alert.held
    finally:
        svc.close()


@pytest.fixture
def verifying_app(lane_app, tmp_path):
    """lane_app with an alert service whose one sink (a webhook no one answers) queues what is sent."""
    client, hub, rt = lane_app
    with alerts_on(hub, {"site": "shop", "rules": {"pass_around": {}}, "webhooks": ["http://127.0.0.1:9/hook"],
                         "verifier": {"hold_below": 0.5}}, tmp_path / "state") as svc:
        yield client, svc


def test_learn_from_verdicts_then_hold_what_staff_would_call_false(verifying_app, tmp_path, capsys):
    from edge_runtime.cli import main

    client, svc = verifying_app
    st = client.get("/v1/alerts/verifier").json()
    assert st["fitted_at"] is None and "not fitted" in st["note"]
    for stream, draft, outcome in _judged(36):
        alert = svc.raise_alert(draft, stream=stream)[0]
        assert client.post(f"/v1/alerts/{alert.id}/ack", json={"outcome": outcome}).status_code == 200
    # every verdicts.learn_every (10) verdicts it fits again by itself: at the 30th the pair had its 30
    auto = svc.verifier.pairs[("lane1", "pass_around")]
    assert (auto.right, auto.false) == (20, 10)
    sent_before = svc.outbox.pending()
    with serve_app(client.app) as where:
        assert main(["alerts", "learn", "--api", where]) == 0
    out = capsys.readouterr().out
    assert "lane1 pass_around: fitted on 24 right and 12 false verdicts" in out and "held" in out
    assert (tmp_path / "state" / FILE).is_file()
    short, _ = svc.raise_alert(_draft(50, 0.1), stream="lane1")
    long, _ = svc.raise_alert(_draft(51, 3.0), stream="lane1")
    assert short.held and short.p_right < 0.5 and not long.held and long.p_right > 0.5
    # the held one is stored and listed (staff can still judge it), and never queued for the sink
    listed = {a["id"]: a for a in client.get("/v1/alerts").json()["alerts"]}
    assert listed[short.id]["held"] is True and listed[long.id]["held"] is False
    assert svc.outbox.pending() == {k: v + 1 for k, v in sent_before.items()}
    assert client.post(f"/v1/alerts/{short.id}/ack", json={"outcome": "confirmed"}).status_code == 200
    status = client.get("/v1/status").json()["alerts"]["verifier"]
    assert status["pairs"]["lane1"]["pass_around"] == {"fitted": True, "right": 24, "false": 12, "holds": True,
                                                       "would_hold": {"right": 0, "false": 12}}
    metrics = client.get("/metrics").text
    held = sum(a["held"] for a in listed.values())  # the short one, and those raised after the fit at 30 verdicts
    assert held >= 2 and f'lvm_alerts_held_total{{rule="pass_around",stream="lane1"}} {float(held)}' in metrics
    # a restarted runtime reads the saved verifier
    again = AlertService(svc.settings, tmp_path / "state", evaluate=False)
    try:
        assert again.verifier.p_right("lane1", _draft(52, 0.1)) == pytest.approx(short.p_right, abs=1e-4)
    finally:
        again.close()


def test_by_default_every_alert_is_sent_with_its_p_right(tmp_path):
    svc = AlertService(AlertSettings.model_validate({"rules": {"pass_around": {}}}), tmp_path, evaluate=False)
    try:
        assert svc.settings.verifier.hold_below == 0.0
        svc.verifier = fit(_judged(45), min_verdicts=30, hold_below=svc.settings.verifier.hold_below)
        alert, _ = svc.raise_alert(_draft(99, 0.1), stream="lane1")
        assert alert.p_right < 0.2 and not alert.held
    finally:
        svc.close()


def test_learn_without_alerts_is_a_409_and_cli_refusals(lane_app, capsys):
    from edge_runtime.cli import main

    client, _, _ = lane_app
    assert "raises no alerts" in one_line_error(client.post("/v1/alerts/verifier"), 409)
    for argv, said in ((["alerts", "learn", "abc"], "takes no id"),
                       (["alerts", "learn", "--outcome", "confirmed"], "--outcome do not apply"),
                       (["alerts", "learn", "--broker", "mqtt://127.0.0.1:1"], "ack and learn go through")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err


def test_the_measured_verdict_loop_gives_no_verdict_to_an_early_nudge():
    """tools.accuracy.verdict_loop judges each alert from the ground truth as staff would: an early nudge
    is not stored, so staff never see it, and the alert after it is the one judged (not a second "false")."""
    from tools.accuracy.verdict_loop import verdicts

    ann = {"instances": [{"instance_id": 1, "product": "milk_carton", "scanned": False, "shrink": None}],
           "events": [{"instance_id": 1, "activity": "bag", "start": 10.0, "end": 12.0}]}
    bag = {"rule": "bagged_without_scan", "product": "milk_carton", "start": 10.2, "end": 12.0}
    raised = [(dict(bag, early=True), 11.5), (bag, 12.4),
              ({"rule": "bagged_without_scan", "product": "soda_can", "start": 40.0, "end": 41.0}, 41.4)]
    assert [(d["product"], d.get("early"), outcome) for _, d, outcome in verdicts(ann, raised)] == [
        ("milk_carton", None, "confirmed"), ("soda_can", None, "false_alert")]
