"""What tools/reliability/alert_latency.py listens with while its paced run streams: a subscriber on the
broker (``Topics``: the lanes' alerts, and their nudges), an HTTP server for the webhook (``Webhook``),
each recording the first arrival of every alert id (``Receipts``), and the ``/metrics`` poller that feeds
the ``FrameClock``."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.reliability.alert_latency_math import FrameClock, LatencyError, parse_frames_in
from tools.reliability.common import RunProcess


class Receipts:
    """First arrival (wall clock) of each alert id, and how many copies came; early nudges (a bag under
    way, before any alert: ``early`` true in the body) apart, each with its arrival and body."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.early: list[tuple[float, dict]] = []
        self.copies = 0
        self._lock = threading.Lock()

    def got(self, alert_id: str, body: dict | None = None) -> None:
        now = time.time()
        with self._lock:
            self.copies += 1
            if isinstance(body, dict) and body.get("early") is True:
                self.early.append((now, body))
            else:
                self.first.setdefault(alert_id, now)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.first)

    def early_snapshot(self) -> list[tuple[float, dict]]:
        with self._lock:
            return list(self.early)


class Webhook:
    """A local HTTP server that answers every POST 200 and records when each alert's body came in."""

    def __init__(self) -> None:
        self.receipts = Receipts()
        receipts = self.receipts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = None
                try:
                    got = json.loads(body)
                    alert_id = str(got["id"])
                except (ValueError, KeyError, TypeError):
                    alert_id = self.headers.get("Idempotency-Key") or "?"
                receipts.got(alert_id, got)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def start(self) -> "Webhook":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Topics:
    """A subscriber on the broker: first arrival of each id on the site's alerts topics
    (``lvm-edge/<site>/<stream>/alerts``), and on its nudges topics with ``nudges`` (and the QoS the nudges
    came at)."""

    def __init__(self, url: str, site: str, nudges: bool, timeout: float = 20.0) -> None:
        import paho.mqtt.client as mqtt

        from edge_runtime.alerts.settings import parse_broker_url

        self.alerts, self.nudges = Receipts(), Receipts()
        self.qos: set[int] = set()
        subs = [(f"lvm-edge/{site}/+/alerts", 1)] + ([(f"lvm-edge/{site}/+/nudges", 1)] if nudges else [])
        subscribed = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *_: cl.subscribe(subs)
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = self._message
        host, port, _tls = parse_broker_url(url)
        try:
            c.connect(host, port, keepalive=30)
        except OSError as err:
            raise LatencyError(f"subscriber: cannot connect to {url} ({err})") from None
        c.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            raise LatencyError(f"subscriber: {url}: no answer in {timeout:g} s")

    def _message(self, _c, _u, msg) -> None:
        try:
            body = json.loads(msg.payload)
            alert_id = str(body["id"])
        except (ValueError, KeyError, TypeError):
            return  # not an alert or a nudge
        if msg.topic.endswith("/nudges"):
            self.qos.add(msg.qos)
            self.nudges.got(alert_id, body)
        else:
            self.alerts.got(alert_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Poller:
    """Reads /metrics every ``every`` seconds into a FrameClock, on its own thread."""

    def __init__(self, rt: RunProcess, clock: FrameClock, every: float) -> None:
        self.rt, self.clock, self.every = rt, clock, every
        self.stop = threading.Event()
        self.polls = 0
        self.poll_s: list[float] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="metrics-poller", daemon=True)

    def _run(self) -> None:
        import httpx

        nxt = time.monotonic()
        while not self.stop.is_set():
            sent = time.time()
            try:
                r = self.rt.client.get(self.rt.url + "/metrics", timeout=5)
                answered = time.time()
                if r.status_code == 200:
                    self.clock.add(sent, answered, parse_frames_in(r.text))
                    self.polls += 1
                    self.poll_s.append(answered - sent)
            except httpx.TransportError:
                pass  # not listening yet
            except LatencyError as err:
                self.error = str(err)
                return
            nxt += self.every
            self.stop.wait(max(0.0, nxt - time.monotonic()))
