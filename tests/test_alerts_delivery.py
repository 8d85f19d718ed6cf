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
