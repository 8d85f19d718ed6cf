"""Delivery to the store's MQTT broker (paho-mqtt), one connection per stream (lane):

    lvm-edge/<site>/<stream>/alerts   QoS 1, each alert's JSON
    lvm-edge/<site>/<stream>/events   QoS 1, the events an evaluation read (mqtt.publish_events)
    lvm-edge/<site>/<stream>/nudges   QoS 0, each alert's nudge as it is stored (edge_runtime/alerts/nudge.py;
                                      not kept: sent once, while connected)
    lvm-edge/<site>/<stream>/status   QoS 1, retained: {"online": true, ...}; the connection's last
                                      will sets it to {"online": false, ...} when the box vanishes

One connection per lane because a connection has one last will: each lane's status topic must go
offline by itself. An alert counts as delivered when the broker's PUBACK for it is back; paho
resends a QoS 1 message that was in flight when a connection dropped (flagged DUP), so each one is
published once per connection object and waited for. After a restart the outbox publishes again
whatever had no PUBACK: a consumer may see an alert twice, always with the same id.

paho connects and reconnects on its own thread (``loop_start``; delays 1 s doubling to 30 s), so a
broker that is down at start or lost later never blocks anything: alerts wait in the outbox.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable

from edge_runtime import __version__
from edge_runtime.alerts.dispatcher import SinkError
from edge_runtime.alerts.record import Alert
from edge_runtime.alerts.settings import MqttSettings, parse_broker_url

TOPIC_ROOT = "lvm-edge"
REPUBLISH_AFTER_S = 60.0   # a message still without PUBACK this long on a live connection is published again
MAX_QUEUED = 1000          # paho's own queue: beyond it a publish is refused and retried from the outbox


def topic(site: str, stream: str, kind: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{stream}/{kind}"


class _Lane:
    """One stream's connection."""

    def __init__(self, sink: "MqttSink", stream: str) -> None:
        import paho.mqtt.client as mqtt

        s = sink.settings
        self.sink, self.stream = sink, stream
        self.status_topic = topic(sink.site, stream, "status")
        self.connected = False
        self.last_error: str | None = None
        self.inflight: dict[int, tuple[Any, float]] = {}  # seq -> (paho MQTTMessageInfo, published at)
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{sink.client_id}-{stream}",
                                      protocol=mqtt.MQTTv311, clean_session=True)
        if s.username:
            c.username_pw_set(s.username, s.password())
        if sink.tls:
            c.tls_set(ca_certs=s.ca_file, certfile=s.cert_file, keyfile=s.key_file)
        c.will_set(self.status_topic, self._status(False), qos=1, retain=True)
        c.reconnect_delay_set(1, 30)
        c.max_queued_messages_set(MAX_QUEUED)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = lambda *_: sink.acked.set()
        c.connect_async(sink.host, sink.port, keepalive=s.keepalive_s)
        c.loop_start()

    def _status(self, online: bool) -> bytes:
        return json.dumps({"online": online, "site": self.sink.site, "stream": self.stream, "box": self.sink.box,
                           "at": time.time(), "version": __version__}).encode()

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            return
        self.connected, self.last_error = True, None
        client.publish(self.status_topic, self._status(True), qos=1, retain=True)
        self.sink.on_change()

    def _on_disconnect(self, _client, _userdata, _flags, reason, _props) -> None:
        was = self.connected
        self.connected = False
        if self.sink.closing:
            return
        if was:
            self.last_error = f"connection to the broker lost ({reason})"
            self.sink.on_change()
        elif not self.last_error:  # e.g. TLS 1.3: a client certificate the broker refuses ends it after the handshake
            self.last_error = f"the broker closed the connection before accepting it ({reason})"

    def _on_connect_fail(self, _client, _userdata) -> None:
        self.connected = False
        # paho does not say why; over TLS a handshake that fails (a plain broker on this port, a
        # certificate not trusted) looks like a broker that is down
        tls = (" (mqtts: the broker is down, or the TLS handshake failed: a broker without TLS on this port, "
               "or a certificate not trusted)") if self.sink.tls else ""
        self.last_error = f"cannot connect to {self.sink.host}:{self.sink.port}{tls}"

    def close(self, timeout: float) -> None:
        if self.connected:  # a clean disconnect sends no last will: say offline ourselves
            info = self.client.publish(self.status_topic, self._status(False), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()


class MqttSink:
    """The "mqtt" sink of the outbox: ``deliver`` publishes a batch and returns the seqs the broker
    acknowledged; ``publish_events`` sends events while connected (not kept anywhere)."""

    name = "mqtt"

    def __init__(self, settings: MqttSettings, site: str, *, wait_s: float = 2.0) -> None:
        self.settings, self.site = settings, site
        self.host, self.port, self.tls = parse_broker_url(settings.url)
        self.box = socket.gethostname()
        self.client_id = settings.client_id or f"lvm-edge-{self.box}-{site}"
        self.wait_s = wait_s
        self.acked = threading.Event()
        self.closing = False
        self.on_ready: Callable[[], None] = lambda: None  # the dispatcher's wake-up, set by it
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()

    def lane(self, stream: str) -> _Lane:
        with self._lock:
            if stream not in self._lanes:
                self._lanes[stream] = _Lane(self, stream)
            return self._lanes[stream]

    def on_change(self) -> None:
        self.on_ready()

    @property
    def connected(self) -> bool:
        lanes = list(self._lanes.values())
        return bool(lanes) and all(ln.connected for ln in lanes)

    @property
    def last_error(self) -> str | None:
        return next((f"{ln.stream}: {ln.last_error}" for ln in self._lanes.values() if ln.last_error), None)

    def status(self) -> dict[str, Any]:
        return {"url": self.settings.url, "connected": self.connected, "last_error": self.last_error,
                "streams": {name: ln.connected for name, ln in self._lanes.items()}}

    def deliver(self, batch: list[tuple[int, Alert]]) -> list[int]:
        """Publish what is not in flight yet, wait up to ``wait_s`` for PUBACKs; -> the seqs acknowledged.
        SinkError when no alert of the batch could go out (every lane it needs is down)."""
        import paho.mqtt.client as mqtt

        now = time.monotonic()
        waiting: list[tuple[int, _Lane]] = []
        for seq, alert in batch:
            ln = self.lane(alert.stream)
            held = ln.inflight.get(seq)
            if held is not None and (held[0].is_published() or not ln.connected
                                     or now - held[1] < REPUBLISH_AFTER_S):
                waiting.append((seq, ln))
                continue
            if not ln.connected:
                continue
            info = ln.client.publish(topic(self.site, alert.stream, "alerts"), alert.payload(), qos=1)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                ln.inflight[seq] = (info, now)
                waiting.append((seq, ln))
            else:
                ln.last_error = f"publish refused: {mqtt.error_string(info.rc)}"
        if not waiting:
            raise SinkError(self.last_error or f"not connected to {self.host}:{self.port}")
        deadline = now + self.wait_s
        while True:
            self.acked.clear()
            done = [seq for seq, ln in waiting if ln.inflight[seq][0].is_published()]
            if len(done) == len(waiting) or time.monotonic() >= deadline:
                break
            self.acked.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        for seq, ln in waiting:
            if seq in done:
                del ln.inflight[seq]
        return done

    def publish_events(self, stream: str, events: list[dict[str, Any]]) -> int:
        """Events to .../events while the lane is connected; -> how many were handed to paho."""
        ln = self.lane(stream)
        if not ln.connected:
            return 0
        t = topic(self.site, stream, "events")
        return sum(ln.client.publish(t, json.dumps(e).encode(), qos=1).rc == 0 for e in events)

    def publish_nudge(self, stream: str, body: bytes) -> bool:
        """A nudge to .../nudges at QoS 0 while the lane is connected; -> whether paho took it."""
        ln = self.lane(stream)
        return ln.connected and ln.client.publish(topic(self.site, stream, "nudges"), body, qos=0).rc == 0

    def close(self, timeout: float = 2.0) -> None:
        self.closing = True
        for ln in list(self._lanes.values()):
            ln.close(timeout)
