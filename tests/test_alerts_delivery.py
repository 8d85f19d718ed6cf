"""Alert delivery through a real Eclipse Mosquitto on loopback (tools/reliability/mosquitto.py) and a
real HTTP server: at-least-once per sink across a broker that is down at start, killed mid-run, and a
runtime process SIGKILLed between raising and delivering; webhooks retried until a 2xx."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from tools.reliability.mosquitto import Mosquitto, free_port, mosquitto_path

REPO = Path(__file__).resolve().parent.parent
needs_broker = pytest.mark.skipif(mosquitto_path() is None,
                                  reason="mosquitto is not installed (Debian: apt-get install mosquitto; .ci/run does)")


def _draft(i: int) -> dict:
    return {"rule": "bagged_without_scan", "product": f"item {i}", "start": 60.0 * i, "end": 60.0 * i + 3,
            "confidence": 0.75, "box": [0.1, 0.1, 0.2, 0.2], "evidence": []}


def _service(tmp_path, *, url: str | None = None, webhooks=(), site="shop") -> AlertService:
    cfg = {"site": site, "webhooks": list(webhooks)}
    if url:
        cfg["mqtt"] = {"url": url, "keepalive_s": 5}
    return AlertService(AlertSettings.model_validate(cfg), tmp_path / "state", evaluate=False)


def _until(cond, timeout: float, every: float = 0.05):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = cond()
        if value:
            return value
        time.sleep(every)
    return cond()


class Received:
    """A subscriber's view: every alert message, in order, copies included."""

    def __init__(self, url: str, *, client_id: str | None = None, site: str | None = None) -> None:
        from edge_runtime.alerts.subscriber import subscribe

        self.messages: list[dict] = []
        self.status: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.client = subscribe(url, self._alert, client_id=client_id, site=site, on_status=self._status)

    def _alert(self, _topic, alert):
        with self._lock:
            self.messages.append(alert)

    def _status(self, topic, body):
        with self._lock:
            self.status[topic] = body

    def ids(self) -> set[str]:
        with self._lock:
            return {m["id"] for m in self.messages}

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@needs_broker
def test_the_same_item_raised_again_under_another_name_is_the_alert_already_stored(tmp_path):
    """A catalog product added after an alert (or a restart re-reading it) renames the item: the id hashes
    the product's name, so the stored alert is found by its stream, rule and interval instead."""
    svc = _service(tmp_path)
    try:
        first, new = svc.raise_alert({**_draft(1), "product": "milk_carton"}, stream="lane1")
        assert new and svc.outbox.ack(first.id).status == "acked"
        again, new = svc.raise_alert({**_draft(1), "product": "milk carton", "start": 61.0}, stream="lane1")
        assert not new and again.id == first.id and again.status == "acked"
        _, new = svc.raise_alert({**_draft(1), "product": "milk carton"}, stream="lane2")  # another lane's item
        assert new
        _, new = svc.raise_alert({**_draft(1), "rule": "pass_around"}, stream="lane1")  # another rule's
        assert new
        _, new = svc.raise_alert({**_draft(2), "product": "milk carton"}, stream="lane1")  # later: another item
        assert new and svc.outbox.counts()["stored"] == 4
        # two items of one product within one id bucket, apart: two alerts, each raised again keeps its id
        a, new_a = svc.raise_alert({**_draft(5), "product": "cheese", "start": 301.0, "end": 304.0}, stream="lane1")
        b, new_b = svc.raise_alert({**_draft(5), "product": "cheese", "start": 319.0, "end": 322.0}, stream="lane1")
        assert new_a and new_b and a.id != b.id and svc.outbox.counts()["stored"] == 6
        again, new = svc.raise_alert({**_draft(5), "product": "cheese", "start": 319.4, "end": 322.0}, stream="lane1")
        assert not new and again.id == b.id
        # after --reset-state the stream's times restart at 0: an alert of the new memory over the same
        # stream seconds is another item, not one of the alerts stored before the memory began
        began = time.time() + 1.0
        fresh, new = svc.raise_alert({**_draft(1), "product": "milk carton"}, stream="lane1", memory_began=began)
        assert new and fresh.id != first.id and fresh.status == "open"
    finally:
        svc.close()


def test_broker_down_at_start_then_up_delivers_and_the_status_says_pending(tmp_path):
    broker = Mosquitto(tmp_path / "broker")
    svc = _service(tmp_path, url=broker.url)
    try:
        raised = [svc.raise_alert(_draft(i), stream="lane1")[0] for i in range(3)]
        st = _until(lambda: (s := svc.status())["sinks"][0]["failures"] and "cannot connect" in (
            s["broker"]["last_error"] or "") and s, 10)
        assert st["pending"] == 3 and st["broker"]["connected"] is False and st["sinks"][0]["pending"] == 3
        broker.start()
        sub = Received(broker.url)
        assert _until(lambda: svc.status()["pending"] == 0, 40), svc.status()
        assert _until(lambda: sub.ids() == {a.id for a in raised}, 5)
        st = svc.status()
        assert st["broker"]["connected"] is True and st["sinks"][0]["delivered"] == 3 and st["last_error"] is None
        got = {m["id"]: m for m in sub.messages}
        assert got[raised[0].id] == json.loads(raised[0].model_dump_json())
        sub.close()
    finally:
        svc.close()
        broker.stop()


@needs_broker
def test_broker_killed_and_restarted_mid_run_loses_nothing(tmp_path):
    broker = Mosquitto(tmp_path / "broker", persistent=True).start()
    sub = Received(broker.url, client_id="test-counter")  # a persistent session: kept by the broker over a restart
    svc = _service(tmp_path, url=broker.url)
    raised = []
    try:
        for phase in range(3):
            for i in range(15):
                raised.append(svc.raise_alert(_draft(100 * phase + i), stream=f"lane{i % 2}")[0])
                time.sleep(0.01)
            if phase == 0:
                broker.kill()
            elif phase == 1:
                time.sleep(0.5)
                broker.start()
        assert _until(lambda: svc.status()["pending"] == 0, 45), svc.status()
        assert _until(lambda: sub.ids() >= {a.id for a in raised}, 20), len(sub.ids())
        assert sub.ids() == {a.id for a in raised}
        # a copy (at-least-once) is the same alert: same id, same body
        bodies: dict[str, dict] = {}
        for m in sub.messages:
            assert bodies.setdefault(m["id"], m) == m
    finally:
        sub.close()
        svc.close()
        broker.stop()


@needs_broker
def test_a_runtime_sigkilled_between_raise_and_delivery_delivers_after_restart(tmp_path):
    broker = Mosquitto(tmp_path / "broker")  # down while the first process runs: nothing can be delivered
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_alerts_delivery import _draft, _service
        from pathlib import Path
        svc = _service(Path({str(tmp_path)!r}), url={broker.url!r})
        for i in range(5):
            print(svc.raise_alert(_draft(i), stream="lane1")[0].id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == -signal.SIGKILL, res.stderr
    ids = res.stdout.split()
    assert len(ids) == 5
    broker.start()
    sub = Received(broker.url)
    svc = _service(tmp_path, url=broker.url)
    try:
        assert _until(lambda: svc.status()["pending"] == 0, 40), svc.status()
        assert _until(lambda: sub.ids() == set(ids), 5), sub.ids()
        assert svc.raise_alert(_draft(0), stream="lane1") [1] is False  # raised again after the restart: one alert
    finally:
        sub.close()
        svc.close()
        broker.stop()


@needs_broker
def test_the_status_topic_is_retained_and_goes_offline_by_the_last_will(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_alerts_delivery import _draft, _service, _until
        from pathlib import Path
        svc = _service(Path({str(tmp_path)!r}), url={broker.url!r}, site="store-7")
        svc.raise_alert(_draft(1), stream="lane3")
        assert _until(lambda: svc.status()["pending"] == 0, 20)
        print("delivered", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout.readline().strip() == "delivered"
        late = Received(broker.url)  # subscribes after the fact: the retained status is there
        topic = "lvm-edge/store-7/lane3/status"
        assert _until(lambda: late.status.get(topic, {}).get("online") is True, 5), late.status
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert _until(lambda: late.status[topic].get("online") is False, 10), late.status
        late.close()
    finally:
        if p.poll() is None:
            p.kill()
        broker.stop()


class _Hook(BaseHTTPRequestHandler):
    fail_first = 2
    seen: list = []

    def do_POST(self):  # noqa: N802 — http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.headers.get("Idempotency-Key"), json.loads(body)))
        ok = len(type(self).seen) > type(self).fail_first
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_webhook_is_retried_with_backoff_until_a_2xx(tmp_path):
    _Hook.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts?key=secret"
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    svc = _service(tmp_path, webhooks=[url, dead])
    try:
        alert, _ = svc.raise_alert(_draft(7), stream="lane2")
        assert _until(lambda: svc.status()["sinks"][0]["pending"] == 0, 20), svc.status()
        st = svc.status()
        hook, other = st["sinks"]
        assert hook["failures"] == 2 and hook["delivered"] == 1 and hook["last_error"] is None
        assert "secret" not in json.dumps(st)  # a webhook's query string may carry its key
        assert [k for k, _ in _Hook.seen] == [alert.id] * 3 and _Hook.seen[-1][1]["id"] == alert.id
        # the other webhook is down: its alert waits, in the status, without holding up the first
        assert other["pending"] == 1 and other["failures"] >= 1 and "refused" in other["last_error"].lower()
        assert st["pending"] == 1
    finally:
        svc.close()
        server.shutdown()


@needs_broker
def test_lvm_edge_alerts_lists_every_lanes_alerts_from_the_broker_once_each(tmp_path):
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker").start()
    shop = _service(tmp_path / "a", url=broker.url, site="shop")
    other = _service(tmp_path / "b", url=broker.url, site="other-shop")
    cli = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "alerts", "--broker", broker.url, "--site", "shop",
                            "--seconds", "6"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the listing is connected (then subscribed: its SUBSCRIBE follows its CONNECT)
        assert _until(lambda: "New client connected" in broker.log.read_text(), 30), broker.log.read_text()
        time.sleep(0.3)
        a1 = shop.raise_alert(_draft(1), stream="lane1")[0]
        a2 = shop.raise_alert(_draft(2), stream="lane2")[0]
        other.raise_alert(_draft(3), stream="lane1")  # another site: not listed with --site shop
        assert _until(lambda: shop.status()["pending"] == 0 and other.status()["pending"] == 0, 20)
        copy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)  # a copy of a1, as at-least-once may deliver
        copy.connect("127.0.0.1", broker.port)
        copy.loop_start()
        copy.publish("lvm-edge/shop/lane1/alerts", a1.payload(), qos=1).wait_for_publish(5)
        copy.disconnect()
        copy.loop_stop()
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
        shop.close()
        other.close()
        broker.stop()
    assert cli.returncode == 0, err
    # each lane publishes on its own connection: the two may arrive in either order
    lines = sorted(out.splitlines())
    assert len(lines) == 2, out
    assert lines[0].startswith(f"shop/lane1  bagged_without_scan  item 1  60.0-63.0 s  0.75  {a1.id}")
    assert lines[1].startswith("shop/lane2") and lines[1].endswith(a2.id)
    assert "2 alert(s), 1 duplicate(s) dropped" in err


@needs_broker
def test_events_go_to_the_events_topic_when_asked(tmp_path):
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path / "broker").start()
    got = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("lvm-edge/+/+/events", qos=1)
    sub.loop_start()

    class Lane:  # what the hook reads of a stream's Runtime
        name, wall_origin = "lane4", None

        class engine:
            labels = event_activities = ["scan", "bag"]

        class stream:
            coverage = {"start": 0.0, "end": 40.0}

    class Rules:
        def __init__(self, rules, activities, scans="vision"):
            pass

        def evaluate(self, events, now, pos_scans=(), entering=()):
            return []

    seen = [{"activity": "scan", "product": "apple", "start": 3.0, "end": 5.0, "confidence": 0.7}]
    svc = AlertService(AlertSettings.model_validate({"site": "s", "rules": {"bagged_without_scan": {}},
                                                     "mqtt": {"url": broker.url, "publish_events": True}}),
                       tmp_path / "state", evaluate=False, rule_engine=Rules, events=lambda rt, w: seen)
    try:
        svc.open_lanes(["lane4"])
        assert _until(lambda: svc.status()["broker"]["connected"], 10)
        svc.evaluate(Lane)
        svc.evaluate(Lane)  # the same event read again (windows overlap): sent once
        assert _until(lambda: got, 5)
        time.sleep(0.5)
        assert got == [("lvm-edge/s/lane4/events", {**seen[0], "site": "s", "stream": "lane4"})]
    finally:
        sub.disconnect()
        sub.loop_stop()
        svc.close()
        broker.stop()


def _certificates(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it (openssl)."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test store CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {n: d / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@needs_broker
@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="openssl is not installed (makes the test's certificates)")
def test_delivery_over_tls_with_a_client_certificate(tmp_path):
    from edge_runtime.alerts.subscriber import subscribe

    c = _certificates(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "broker", tls=(c["ca.pem"], c["server.pem"], c["server.key"])).start()
    mqtt_cfg = {"url": broker.url, "ca_file": str(c["ca.pem"]), "cert_file": str(c["client.pem"]),
                "key_file": str(c["client.key"])}
    svc = AlertService(AlertSettings.model_validate({"site": "tls", "mqtt": mqtt_cfg}), tmp_path / "state",
                       evaluate=False)
    got = []
    sub = subscribe(broker.url, lambda _t, a: got.append(a["id"]), ca_file=str(c["ca.pem"]),
                    cert_file=str(c["client.pem"]), key_file=str(c["client.key"]))
    try:
        alert, _ = svc.raise_alert(_draft(1), stream="lane1")
        assert _until(lambda: got == [alert.id], 20), svc.status()
        # without a client certificate the broker refuses the connection: nothing is delivered, and it is said
        plain = AlertService(AlertSettings.model_validate({"site": "tls", "mqtt": {"url": broker.url,
                                                                                   "ca_file": str(c["ca.pem"])}}),
                             tmp_path / "state2", evaluate=False)
        try:
            plain.raise_alert(_draft(2), stream="lane1")
            st = _until(lambda: (s := plain.status())["broker"]["last_error"] and s, 15)
            assert st["pending"] == 1 and st["broker"]["connected"] is False, st
            said = st["broker"]["last_error"]
            assert "closed the connection before accepting it" in said or "cannot connect" in said, said
        finally:
            plain.close()
    finally:
        sub.disconnect()
        sub.loop_stop()
        svc.close()
        broker.stop()


@needs_broker
def test_a_broker_with_passwords_takes_the_one_named_by_password_env(tmp_path, monkeypatch):
    broker = Mosquitto(tmp_path / "broker", users={"lane-box": "s3cret"}).start()
    monkeypatch.setenv("LVM_TEST_MQTT_PASSWORD", "s3cret")
    monkeypatch.setenv("LVM_TEST_WRONG_PASSWORD", "guess")
    cfg = {"url": broker.url, "username": "lane-box", "password_env": "LVM_TEST_MQTT_PASSWORD"}
    good = AlertService(AlertSettings.model_validate({"mqtt": cfg}), tmp_path / "good", evaluate=False)
    bad = AlertService(AlertSettings.model_validate({"mqtt": {**cfg, "password_env": "LVM_TEST_WRONG_PASSWORD"}}),
                       tmp_path / "bad", evaluate=False)
    try:
        good.raise_alert(_draft(1), stream="lane1")
        bad.raise_alert(_draft(1), stream="lane1")
        assert _until(lambda: good.status()["pending"] == 0, 20), good.status()
        st = _until(lambda: (s := bad.status())["broker"]["last_error"] and s, 15)
        assert "refused" in st["broker"]["last_error"] and st["pending"] == 1, st
        assert "s3cret" not in json.dumps(good.status()) + (tmp_path / "good" / "alerts.db").read_bytes().decode("latin-1")
    finally:
        good.close()
        bad.close()
        broker.stop()
