"""The other end of the broker: every lane's alerts in one place (``lvm-edge alerts --broker``, the
fault tool's counter).

Subscribes to ``lvm-edge/<site>/<stream>/alerts`` (``+`` for every site or stream) at QoS 1 and hands each alert to
``on_alert`` with its topic. Copies of one alert (at-least-once delivery) carry the same id:
``Deduper`` keeps the first, and the first sent again once the alert was cleared (its item scanned or
put back after it: ``cleared`` set). With a ``client_id`` the session is persistent (clean_session off): the
broker keeps the QoS 1 alerts that arrive while this subscriber is away and hands them over when
it comes back; without one, only alerts raised while it listens are seen.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

from edge_runtime.alerts.settings import parse_broker_url


class SubscribeError(Exception):
    """The broker cannot be reached or refused us (one line)."""


def alert_line(alert: dict[str, Any]) -> str:
    """site/stream, rule, product, interval, confidence, id: one line."""
    start, end = alert.get("start"), alert.get("end")
    span = f"{start:.1f}-{end:.1f} s" if isinstance(start, (int, float)) and isinstance(end, (int, float)) else "?"
    if isinstance(alert.get("wall_start"), (int, float)):
        # the viewer's zone, said: lanes of several stores may be read from one place
        span += time.strftime(" (%Y-%m-%d %H:%M:%S %Z)", time.localtime(alert["wall_start"]))
    conf = alert.get("confidence")
    conf_s = f"{conf:.2f}" if isinstance(conf, (int, float)) else "?"
    status = "" if alert.get("status", "open") == "open" else f"  [{alert['status']}]"
    if alert.get("held"):
        status += f"  [held: p_right {alert.get('p_right', 0):.2f}]"
    cleared = alert.get("cleared")
    if isinstance(cleared, dict):
        why = "put back" if cleared.get("why") == "put_back" else "scanned"
        status += f"  [cleared: {why} {cleared.get('after_s', 0):.0f} s later]"
    return (f"{alert.get('site', '?')}/{alert.get('stream', '?')}  {alert.get('rule', '?')}  {alert.get('product', '?')}  "
            f"{span}  {conf_s}  {alert.get('id', '?')}{status}")


class Deduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.duplicates = 0

    def first(self, alert: dict[str, Any]) -> bool:
        key = str(alert.get("id")) + (" cleared" if alert.get("cleared") else "")
        if key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(key)
        return True


def subscribe(url: str, on_alert: Callable[[str, dict[str, Any]], None], *, site: str | None = None,
              stream: str | None = None, username: str | None = None, password: str | None = None, ca_file: str | None = None,
              cert_file: str | None = None, key_file: str | None = None, client_id: str | None = None,
              timeout: float = 10.0, on_status: Callable[[str, dict[str, Any]], None] | None = None):
    """Connect, subscribe, start paho's thread; -> the client (``client.disconnect(); client.loop_stop()``
    to end). SubscribeError when the broker cannot be reached, refuses, or does not confirm in ``timeout``.
    A connection lost later is re-made by paho (1 s doubling to 30 s) and re-subscribed."""
    import paho.mqtt.client as mqtt

    try:
        host, port, tls = parse_broker_url(url)
    except ValueError as err:
        raise SubscribeError(str(err)) from None
    for part, value in (("site", site), ("stream", stream)):
        if value is not None and (not value or any(c in value for c in "+#/")):
            raise SubscribeError(f"{part} {value!r} cannot be part of a topic (no + # /)")
    topic = f"lvm-edge/{site or '+'}/{stream or '+'}/alerts"
    status_topic = f"lvm-edge/{site or '+'}/{stream or '+'}/status"
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv311,
                    clean_session=client_id is None)
    if username:
        c.username_pw_set(username, password)
    if tls:
        c.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
    c.reconnect_delay_set(1, 30)
    subscribed = threading.Event()
    refused: list[str] = []

    def on_connect(client, _u, _f, reason, _p):
        if reason.is_failure:
            refused.append(str(reason))
            return
        subs = [(topic, 1)] + ([(status_topic, 1)] if on_status else [])
        client.subscribe(subs)

    def on_message(_c, _u, msg):
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return  # not ours: a topic under lvm-edge/ written by something else
        if not isinstance(body, dict):
            return
        if msg.topic.endswith("/status"):
            on_status(msg.topic, body)
        elif all(k in body for k in ("id", "rule", "stream")):  # something else written there is no alert
            on_alert(msg.topic, body)

    c.on_connect = on_connect
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = on_message
    try:
        c.connect(host, port, keepalive=30)
    except (OSError, ValueError) as err:
        raise SubscribeError(f"cannot connect to {url} ({getattr(err, 'strerror', None) or err})") from None
    c.loop_start()
    t_end = time.monotonic() + timeout
    while not subscribed.wait(0.05):
        if refused or time.monotonic() > t_end:
            c.disconnect()
            c.loop_stop()
            why = f"refused: {refused[0]}" if refused else f"no answer in {timeout:g} s"
            raise SubscribeError(f"{url}: {why}")
    return c
