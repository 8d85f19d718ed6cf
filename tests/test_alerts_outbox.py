"""The alert store and outbox (edge_runtime/alerts/outbox.py) and the alerts: config section:
idempotent by id, kept across a restart per sink, bounded, a damaged file set aside; bad config
refused at start in one line."""
import sqlite3

import pytest

from edge_runtime.alerts.outbox import DB_NAME, Outbox
from edge_runtime.alerts.record import alert_id, from_draft


def _alert(i: int, stream: str = "lane1", rule: str = "pass_around", start: float | None = None):
    return from_draft({"rule": rule, "product": f"item {i}", "start": 60.0 * i if start is None else start,
                       "end": 60.0 * i + 4, "confidence": 0.8, "box": [0.1, 0.2, 0.3, 0.4],
                       "evidence": [{"activity": "bag", "product": f"item {i}", "start": 60.0 * i, "end": 60.0 * i + 4}]},
                      site="shop", stream=stream, stream_time=60.0 * i + 8)


def test_insert_is_idempotent_by_id_and_the_id_is_stable(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt", "webhook:http://h/x"])
    a = _alert(1)
    assert box.add(a) is True
    again = _alert(1, start=a.start + 3)  # the same rule, product and lane, 3 s later: the same alert
    assert again.id == a.id and box.add(again) is False
    assert _alert(1, stream="lane2").id != a.id and _alert(1, rule="bagged_without_scan").id != a.id
    assert alert_id("shop", "lane1", "pass_around", "item 1", 60.0) != alert_id("shop", "lane1", "pass_around",
                                                                                 "item 1", 90.0)
    assert box.pending() == {"mqtt": 1, "webhook:http://h/x": 1}
    assert box.counts() == {"stored": 1, "open": 1, "dropped": 0}
    assert [x.id for _, x in box.due("mqtt")] == [a.id] and box.get(a.id).start == a.start


def test_what_a_sink_has_not_acknowledged_survives_a_restart_per_sink(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt", "webhook:http://h/x"])
    alerts = [_alert(i) for i in range(5)]
    for a in alerts:
        box.add(a)
    box.delivered("mqtt", [seq for seq, _ in box.due("mqtt")[:3]])
    box.close()
    box = Outbox(tmp_path, sinks=["mqtt", "webhook:http://h/x"])
    assert [a.id for _, a in box.due("mqtt")] == [a.id for a in alerts[3:]]
    assert [a.id for _, a in box.due("webhook:http://h/x")] == [a.id for a in alerts]
    assert box.pending() == {"mqtt": 2, "webhook:http://h/x": 5}
    assert all(box.add(a) is False for a in alerts)  # raised again after the restart: nothing resent
    assert box.pending()["mqtt"] == 2
    journal = sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_a_sink_removed_from_the_config_stops_holding_alerts(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt", "webhook:http://h/x?token=secret"])
    box.add(_alert(1))
    box.close()
    said = []
    box = Outbox(tmp_path, sinks=["mqtt"], warn=said.append)
    assert box.pending() == {"mqtt": 1}
    assert len(said) == 1 and "webhook:http://h/x" in said[0] and "secret" not in said[0]


def test_webhooks_apart_only_by_their_query_keep_two_names_without_showing_it():
    from edge_runtime.alerts.outbox import sink_label

    a, b = sink_label("webhook:http://h:81/same?token=A"), sink_label("webhook:http://h:81/same?token=B")
    assert a != b and a.startswith("webhook:http://h:81/same?") and "token" not in a + b
    assert sink_label("webhook:http://h/x") == "webhook:http://h/x"


def test_the_store_is_bounded_delivered_and_acked_alerts_go_first(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt"], max_alerts=10)
    alerts = [_alert(i) for i in range(10)]
    for a in alerts:
        box.add(a)
    box.delivered("mqtt", [seq for seq, _ in box.due("mqtt")[:6]])  # 0-5 delivered
    box.ack(alerts[4].id)
    box.add(_alert(10))
    ids = {a.id for _, a in box.list(limit=100)}
    assert alerts[4].id not in ids and alerts[0].id in ids  # the acked one went first, then the oldest
    for i in range(11, 16):
        box.add(_alert(i))
    ids = {a.id for _, a in box.list(limit=100)}
    assert len(ids) == 10 and all(a.id in ids for a in alerts[6:])  # nothing undelivered was dropped
    assert box.counts()["dropped"] == 0
    for i in range(16, 20):  # only undelivered ones left: the oldest of them go, counted
        box.add(_alert(i))
    assert box.counts() == {"stored": 10, "open": 10, "dropped": 4}
    assert box.pending()["mqtt"] == 10


def test_ack_is_idempotent_and_listing_filters(tmp_path):
    box = Outbox(tmp_path, sinks=[])
    a, b, c = _alert(1), _alert(2, stream="lane2"), _alert(3)
    for x in (a, b, c):
        box.add(x)
    first = box.ack(a.id, now=1000.0)
    assert first.status == "acked" and first.acked_at == 1000.0
    assert box.ack(a.id, now=2000.0).acked_at == 1000.0
    assert box.ack("nope") is None
    assert [x.id for _, x in box.list()] == [c.id, b.id, a.id]
    assert [x.id for _, x in box.list(stream="lane2")] == [b.id]
    assert [x.id for _, x in box.list(status="open")] == [c.id, b.id]
    assert [x.id for _, x in box.list(since=c.raised_at)] == [c.id]
    page = box.list(limit=2)
    assert [x.id for _, x in box.list(limit=2, before_seq=page[-1][0])] == [a.id]


def test_every_copy_of_an_alert_has_the_body_it_was_raised_with_even_once_acked(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt"])
    a = _alert(1)
    box.add(a)
    sent = box.due("mqtt")[0][1].payload()
    box.ack(a.id, now=1000.0)
    again = box.due("mqtt")[0][1]                    # the broker was away: the copy sent after the ack
    assert again.payload() == sent and again.status == "open"
    assert box.list()[0][1].status == "acked"         # the runtime's own list shows the ack


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_store_is_set_aside_with_one_warning(tmp_path, damage):
    box = Outbox(tmp_path, sinks=["mqtt"])
    for i in range(50):
        box.add(_alert(i))
    box.close()
    path = tmp_path / DB_NAME
    for tail in ("-wal", "-shm"):
        (tmp_path / (DB_NAME + tail)).unlink(missing_ok=True)
    raw = path.read_bytes()
    path.write_bytes(b"this is not a database" * 200 if damage == "garbage" else raw[: len(raw) // 3])
    said = []
    box = Outbox(tmp_path, sinks=["mqtt"], warn=said.append)
    assert len(said) == 1 and "set aside" in said[0] and "\n" not in said[0]
    assert box.counts()["stored"] == 0 and box.add(_alert(1))
    aside = [p for p in tmp_path.glob(f"{DB_NAME}.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].stat().st_size > 0  # kept for a look, with its journal beside it


BAD_CONFIGS = [
    ("alerts: {rules: {no_such_rule: {}}}", "unknown rule 'no_such_rule'"),
    ("alerts: {rules: {pass_around: {}}, streams: {lane1: {nope: off}}}", "unknown rule 'nope'"),
    ("alerts: {mqtt: {url: 'http://broker:1883'}}", "expected mqtt://host[:port]"),
    ("alerts: {mqtt: {url: 'mqtt://broker:99999'}}", "broker URL"),
    ("alerts: {mqtt: {url: 'mqtt://user:pw@broker'}}", "password_env"),
    ("alerts: {mqtt: {url: 'mqtts://broker', ca_file: /no/such/ca.pem}}", "no such file: /no/such/ca.pem"),
    ("alerts: {mqtt: {url: 'mqtt://broker', password: x}}", "password"),
    ("alerts: {webhooks: ['ftp://x/y']}", "http:// or https://"),
    ("alerts: {site: 'a/b', rules: {pass_around: {}}}", "MQTT topic"),
    ("alerts: {webhooks: ['http://127.0.0.1:99999/hook']}", "Port out of range"),
    ("alerts: {webhooks: ['http://127.0.0.1:abc/hook']}", "Port could not be cast"),
    ("alerts: {webhooks: ['http://user:pw@127.0.0.1:9/h']}", "user or password in the URL is not sent"),
    ("alerts: {webhooks: ['http://back office/h']}", "is not a host[:port]"),
    ("alerts: {mqtt: {url: 'mqtt://broker store:1883'}}", "is not a host name or address"),
    ("alerts: {mqtt: {url: 'mqtt://127.0.0.1:0'}}", "port 0"),
    ("alerts: {id_bucket_s: .inf, rules: {pass_around: {}}}", "id_bucket_s"),
    ("alerts: {clear_within_s: -5, rules: {pass_around: {}}}", "clear_within_s"),
]


@pytest.mark.parametrize("text,said", BAD_CONFIGS)
def test_bad_alert_config_is_one_line_and_exit_2(tmp_path, capsys, text, said):
    from edge_runtime.cli import main

    cfg = tmp_path / "rt.yaml"
    cfg.write_text(text + "\n")
    code = main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert said in err and "alerts" in err, err


def test_alerts_without_a_state_dir_or_an_unset_password_variable_exit_2(tmp_path, capsys, monkeypatch, tiny_bundle):
    from edge_runtime.cli import main

    cfg = tmp_path / "rt.yaml"
    cfg.write_text("alerts: {rules: {pass_around: {}}}\n")
    assert main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none"]) == 2
    assert "alerts need a state directory" in capsys.readouterr().err
    monkeypatch.delenv("LVM_TEST_MQTT_PW", raising=False)
    cfg.write_text("alerts: {mqtt: {url: 'mqtt://127.0.0.1', username: u, password_env: LVM_TEST_MQTT_PW}}\n")
    assert main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LVM_TEST_MQTT_PW is not set" in err
    # without an event path the rules read what happened, which only the memory reader answers: the heads
    # are refused at start (the tests' bundle has no event head)
    cfg.write_text(f"bundle: {tiny_bundle}\nalerts: {{rules: {{bagged_without_scan: {{}}}}}}\n")
    assert main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "s"), "--answers", "heads"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the memory reader" in err
    # a password written where the variable's name goes is not repeated into the log
    cfg.write_text("alerts: {mqtt: {url: 'mqtt://127.0.0.1', username: u, password_env: 's3cr3t-Pa55'}}\n")
    assert main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "password_env" in err and "s3cr3t" not in err


def test_a_streams_status_names_its_own_rules_and_thresholds():
    from types import SimpleNamespace

    from edge_runtime.alerts.rules import RULES
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    s = AlertSettings.model_validate({"rules": {"bagged_without_scan": {}},
                                      "streams": {"lane2": {"bagged_without_scan": False},
                                                  "lane3": {"bagged_without_scan": {"min_confidence": 0.5}}}})
    svc = SimpleNamespace(settings=s)
    assert AlertService.stream_rules(svc, "lane2") == {}
    lane3 = AlertService.stream_rules(svc, "lane3")["bagged_without_scan"]
    assert lane3 == {**RULES["bagged_without_scan"].thresholds, "min_confidence": 0.5}
    assert AlertService.stream_rules(svc, "lane1") == {"bagged_without_scan": dict(RULES["bagged_without_scan"].thresholds)}


def test_per_stream_rule_changes():
    from edge_runtime.alerts.settings import AlertSettings

    s = AlertSettings.model_validate({"rules": {"pass_around": {"min_confidence": 0.6}, "bagged_without_scan": None},
                                      "streams": {"lane2": {"pass_around": {"min_confidence": 0.9},
                                                            "bagged_without_scan": False}}})
    assert s.rules_for("lane1") == {"pass_around": {"min_confidence": 0.6}, "bagged_without_scan": {}}
    assert s.rules_for("lane2") == {"pass_around": {"min_confidence": 0.9}}
    assert s.enabled and not AlertSettings().enabled


def test_tls_files_that_do_not_load_are_refused_at_start(tmp_path, capsys):
    from edge_runtime.cli import main

    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    cfg = tmp_path / "rt.yaml"
    cfg.write_text(f"alerts: {{mqtt: {{url: 'mqtts://broker.lan', ca_file: '{ca}'}}}}\n")
    code = main(["run", "--config", str(cfg), "--source", "demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "the TLS files do not load" in err, err


def test_a_store_damaged_while_running_gives_one_line_errors_not_crashes(tmp_path):
    from edge_runtime.alerts.outbox import OutboxError

    box = Outbox(tmp_path, sinks=["mqtt"])
    box.add(_alert(1))
    box._db.execute("DROP TABLE outbox")  # what a damaged page looks like to a query: an sqlite3 error
    for call in (lambda: box.due("mqtt"), box.pending, lambda: box.add(_alert(2)), lambda: box.delivered("mqtt", [1])):
        with pytest.raises(OutboxError) as err:
            call()
        assert "\n" not in str(err.value) and str(err.value).startswith("alerts.db: ")
    assert box.errors == 4 and box.last_error


@pytest.mark.parametrize("argv,said", [
    (["alerts", "--follow"], "--follow only with --broker URL"),
    (["alerts", "--site", "s", "--client-id", "c"], "--site, --client-id only with --broker URL"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "--since", "60"], "--since filter a runtime's list"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "--site", "a/b"], "cannot be part of an MQTT topic"),
    (["alerts", "--broker", "tcp://127.0.0.1:1"], "expected mqtt://host[:port]"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "ack", "abc"], "ack and learn go through a runtime's API"),
    (["alerts", "--broker", "mqtts://127.0.0.1:1", "--ca-file", "/no/ca.pem"], "--ca-file: no such file: /no/ca.pem"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "--ca-file", "tests"], "--ca-file: a folder, not a file: tests"),
    (["alerts", "--broker", "mqtts://127.0.0.1:1", "--cert-file", "README.md"], "give --cert-file and --key-file together"),
    (["alerts", "--broker", "mqtts://127.0.0.1:1", "--ca-file", "README.md"], "the TLS files do not load: ca_file (README.md)"),
    (["alerts", "ack"], "give the alert's id"),
    (["alerts", "--limit", "1000"], "must be at most 500"),
    (["alerts", "--seconds", "3"], "--seconds only with --broker URL"),
    (["alerts", "--broker", "mqtt://127.0.0.1:1", "--seconds", "0"], "must be above 0"),
    (["alerts", "--broker", ""], "expected mqtt://host[:port]"),
    (["alerts", "--broker", "mqtt://u:p@127.0.0.1:1"], "--username"),
])
def test_alerts_command_bad_input_is_one_line_and_exit_2(capsys, argv, said):
    from edge_runtime.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and said in err, err


def test_per_stream_changes_for_a_stream_that_does_not_run_are_named_at_start(tmp_path, capsys):
    from edge_runtime.cli import main

    cfg = tmp_path / "rt.yaml"
    cfg.write_text("alerts: {rules: {bagged_without_scan: {}}, streams: {lane9: {bagged_without_scan: off}}}\n")
    code = main(["run", "--config", str(cfg), "--source", "lane1=demo://checkout?seed=1", "--api", "none",
                 "--duration", "2", "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "alerts.streams names lane9, which no stream of this run is called (streams: lane1)" in err



def test_a_rule_the_bundle_cannot_evaluate_is_refused_before_any_stream_folder_is_made(tmp_path, capsys, tiny_bundle):
    from edge_runtime.cli import main

    cfg = tmp_path / "rt.yaml"
    # the tests' bundle has no event head, and its memory no pass_around
    cfg.write_text(f"bundle: {tiny_bundle}\nalerts: {{rules: {{pass_around: {{}}}}}}\n")
    assert main(["run", "--config", str(cfg), "--source", "lane1=demo://checkout?seed=1", "--api", "none",
                 "--state-dir", str(tmp_path / "state")]) == 2
    assert "rule pass_around needs the activity pass_around" in capsys.readouterr().err
    assert not (tmp_path / "state" / "streams").exists()


def test_a_subscriber_line_names_its_time_zone(monkeypatch):
    import time as _time

    from edge_runtime.alerts.subscriber import alert_line

    monkeypatch.setenv("TZ", "UTC")
    _time.tzset()
    try:
        line = alert_line({"site": "s", "stream": "lane1", "rule": "bagged_without_scan", "product": "cheese",
                           "start": 1.0, "end": 2.0, "wall_start": 1.8e9, "confidence": 0.8, "id": "abc"})
    finally:
        monkeypatch.undo()
        _time.tzset()
    assert "(2027-01-15 08:00:00 UTC)" in line
