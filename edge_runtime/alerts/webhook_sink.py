"""Delivery by HTTP POST: each alert's JSON to one URL, with ``Idempotency-Key: <alert id>`` so a
receiver can drop the copies at-least-once delivery may send. A 2xx answer counts as delivered;
anything else (an error status, no answer, a timeout) leaves the alert in the outbox and the
dispatcher retries with backoff, in order: an alert is not sent before the ones raised before it.

The standard library's urllib: the runtime's dependencies carry no HTTP client.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Callable

from edge_runtime import __version__
from edge_runtime.alerts.dispatcher import SinkError
from edge_runtime.alerts.outbox import sink_label
from edge_runtime.alerts.record import Alert


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error here: urllib would follow a 302 with a GET and no body, and call it done."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class WebhookSink:
    def __init__(self, url: str, *, timeout_s: float = 10.0,
                 inline: Callable[[str, int], bytes | None] | None = None) -> None:
        """``inline(alert id, k) -> JPEG``: each of the alert's ``images`` goes in its JSON as ``jpeg_base64``
        (``alerts.evidence.webhook_inline``); None: URLs only."""
        self.url = url
        self.inline = inline
        self.name = f"webhook:{url}"
        self.shown = sink_label(self.name)
        self.timeout_s = timeout_s
        self.last_error: str | None = None
        self.last_ok: float | None = None
        self.on_ready: Callable[[], None] = lambda: None

    def _body(self, alert: Alert) -> bytes:
        if self.inline is None or not alert.images:
            return alert.payload()
        d = alert.model_dump(mode="json")
        for k, img in enumerate(d["images"]):
            jpeg = self.inline(alert.id, k)
            img["jpeg_base64"] = base64.b64encode(jpeg).decode() if jpeg is not None else None
        return json.dumps(d).encode()

    def _post(self, alert: Alert) -> None:
        req = urllib.request.Request(self.url, data=self._body(alert), method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": alert.id,
            "User-Agent": f"lvm-edge/{__version__}"})
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                resp.read(1 << 16)
        except urllib.error.HTTPError as err:  # urllib raises for every status >= 300 it does not follow
            moved = (f" (redirects are not followed: give the URL it points to, "
                     f"{err.headers.get('Location', '?')})") if 300 <= err.code < 400 else ""
            raise SinkError(f"{self.shown}: HTTP {err.code} {err.reason}{moved}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise SinkError(f"{self.shown}: {getattr(err, 'reason', err)}") from None

    def deliver(self, batch: list[tuple[int, Alert]]) -> list[int]:
        """POST each in order until one fails; -> the seqs delivered. SinkError if the first one failed."""
        import time

        done: list[int] = []
        for seq, alert in batch:
            try:
                self._post(alert)
            except SinkError as err:
                self.last_error = str(err)
                if not done:
                    raise
                break
            done.append(seq)
            self.last_ok, self.last_error = time.time(), None
        return done

    def status(self) -> dict[str, Any]:
        return {"url": self.shown, "last_error": self.last_error, "last_ok": self.last_ok}

    def close(self, timeout: float = 0.0) -> None:
        pass
