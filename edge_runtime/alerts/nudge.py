"""The nudge: a small, fast signal for the kiosk's own screen, sent as each alert is stored, and
earlier still for a bag under way that would raise one (an early nudge: the rules' ``nudges``, never
stored; its ``early`` is true, its ``item`` the tracked item its alert names too). An alert or an
early nudge cleared later (its item scanned or put back: edge_runtime/alerts/cleared.py) nudges again
with ``cleared`` set: the screen takes its prompt back.

An alert travels through the outbox (durable, retried, at least once); its nudge does not: it goes
once, at once, to

    lvm-edge/<site>/<stream>/nudges   MQTT QoS 0 on the lane's connection (when alerts.mqtt is set)
    nudge.webhook                     an HTTP POST to a local URL (the kiosk's screen), short timeout

and is never kept in the outbox. A broker that is away, or a screen that does not answer, loses the
nudge, never the alert: the alert is stored before its nudge is queued, and the nudge is sent on its
own thread from a bounded queue (full: the nudge is dropped and counted), so nothing waits for it.

    alerts:
      nudge:
        mqtt: true                               # default: on wherever alerts.mqtt is set
        webhook: http://127.0.0.1:8080/nudge     # the kiosk screen's local endpoint (optional)
        timeout_s: 1.0
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("lvm_edge")
MAX_WAITING = 256   # nudges queued for the sender; beyond it they are dropped (an alert never is)


class NudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mqtt: bool = Field(True, description="publish each alert's nudge on lvm-edge/<site>/<stream>/nudges (QoS 0) "
                                         "where alerts.mqtt is set")
    webhook: str | None = Field(None, description="a local http(s) URL that receives each nudge as a POST")
    timeout_s: float = Field(1.0, gt=0, le=10, description="the webhook's timeout: a nudge late is no nudge")

    @field_validator("webhook")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            p = urlsplit(v)
            p.port
        except ValueError as err:
            raise ValueError(f"nudge webhook {v!r}: {err}") from None
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"nudge webhook {v!r}: expected an http:// or https:// URL")
        return v


def nudge_body(alert, early: bool = False) -> bytes:
    """What a nudge says: enough for a screen to show it (the alert itself comes through the outbox).
    ``early``: a bag under way, before any alert (``id`` is the one its alert would take; no images yet);
    ``item``: the tracked item's id, the same in its early nudge and its alert's; ``cleared``: null, or why
    and when the alert was cleared (the screen takes its prompt back)."""
    items = [e["item"] for e in alert.evidence if isinstance(e, dict) and e.get("item") is not None]
    return json.dumps({"id": alert.id, "early": early, "site": alert.site, "stream": alert.stream, "rule": alert.rule,
                       "product": alert.product, "item": items[0] if items else None, "start": alert.start,
                       "end": alert.end, "confidence": alert.confidence, "raised_at": alert.raised_at,
                       "sent_at": time.time(), "images": [i.url for i in alert.images],
                       "cleared": alert.cleared.model_dump() if alert.cleared is not None else None}).encode()


class Nudger:
    """``send(alert)`` returns at once; a thread publishes and posts the nudges in order."""

    def __init__(self, settings: NudgeSettings, *, mqtt=None) -> None:
        self.settings = settings
        self.mqtt = mqtt if settings.mqtt else None
        self.sent = {"mqtt": 0, "webhook": 0}
        self.early = 0   # early nudges queued (bags under way, before any alert)
        self.cleared = 0  # nudges queued again to take a prompt back (its item scanned or put back after)
        self.failed = {"mqtt": 0, "webhook": 0}
        self.dropped = 0
        self.last_error: str | None = None
        self._q: queue.Queue = queue.Queue(MAX_WAITING)
        self._thread: threading.Thread | None = None
        if self.mqtt is not None or settings.webhook:
            self._thread = threading.Thread(target=self._loop, name="lvm-alerts-nudge", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self._thread is not None

    def send(self, alert, early: bool = False) -> None:
        """Queue ``alert``'s nudge (``early``: an unstored alert of a bag under way); never blocks, never
        raises (a full queue drops it, counted)."""
        if self._thread is None:
            return
        try:
            self._q.put_nowait((alert, early))
        except queue.Full:
            self.dropped += 1
            return
        if getattr(alert, "cleared", None) is not None:
            self.cleared += 1
        else:
            self.early += early

    def _loop(self) -> None:
        while True:
            got = self._q.get()
            if got is None:
                return
            alert, early = got
            try:
                body = nudge_body(alert, early)
            except Exception as err:  # a nudge must never end the sender
                self._fail("mqtt", f"{type(err).__name__}: {err}")
                continue
            if self.mqtt is not None:
                try:
                    ok = self.mqtt.publish_nudge(alert.stream, body)
                except Exception as err:
                    ok, self.last_error = False, f"mqtt: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
                if ok:
                    self.sent["mqtt"] += 1
                else:
                    self._fail("mqtt", self.last_error or "not connected to the broker")
            if self.settings.webhook:
                self._post(body)

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(self.settings.webhook, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout_s) as resp:
                resp.read(1 << 12)
            self.sent["webhook"] += 1
        except (urllib.error.URLError, OSError, ValueError) as err:
            self._fail("webhook", f"webhook: {getattr(err, 'reason', err)}")

    def _fail(self, where: str, message: str) -> None:
        self.failed[where] += 1
        self.last_error = message

    def status(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "mqtt": self.mqtt is not None, "webhook": self.settings.webhook is not None,
                "sent": dict(self.sent), "early": self.early, "cleared": self.cleared, "failed": dict(self.failed),
                "dropped": self.dropped,
                "last_error": self.last_error}

    def close(self, timeout: float = 1.0) -> None:
        if self._thread is None:
            return
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
