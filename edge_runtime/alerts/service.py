"""What a runtime holds for alerts: the outbox, its sinks and their delivery threads, the rules'
evaluation (edge_runtime/alerts/evaluation.py: a rule engine per stream, one thread, fed by the commit
hook ``committed``), the till's feed with ``alerts.scans: pos`` (edge_runtime/alerts/till_feed.py),
each alert's evidence and nudge, the verifier learnt from staff's verdicts
(edge_runtime/alerts/verifier.py), and the status and metrics of it all.

A draft a rule returns is stored as an Alert in the outbox (``raise_alert``: once per incident), which
wakes the sinks' threads; its evidence is stored with it and its nudge goes. An alert the verifier
holds is stored with its evidence and neither sent nor nudged. Nothing of this runs on the
intake thread, so neither a slow rule nor a lost broker slows the stream.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from edge_runtime.alerts.cleared import MAX_WATCHED
from edge_runtime.alerts.dispatcher import SinkWorker
from edge_runtime.alerts.evaluation import Evaluator
# read from here too (tests/test_alerts_api.py): what an evaluation reads again, and how far back at first
from edge_runtime.alerts.evaluation import FIRST_LOOKBACK_S, OVERLAP_S  # noqa: F401
from edge_runtime.alerts.metrics import AlertMetrics
from edge_runtime.alerts.outbox import Outbox, OutboxError, sink_label
from edge_runtime.alerts.record import (OUTCOMES, RIGHT_OUTCOMES, Alert, Cleared, Verdict, another_item_id,
                                        from_draft)
from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.alerts.verifier import Verifier, VerifierError, fit

log = logging.getLogger("lvm_edge")

NO_RULES = "alerts: no rules configured"
# a raised alert is compared with this many of its stream's newest stored alerts for the same item
# (FIRST_LOOKBACK_S of events re-read after a restart raise far fewer)
SAME_INCIDENT_SCAN = 200


def no_alerts_status() -> dict[str, Any]:
    """The ``alerts`` section of /v1/status of a runtime without alert rules or sinks."""
    return {"enabled": False, "note": NO_RULES}


class AlertService:
    def __init__(self, settings: AlertSettings, state_dir: str | Path, *, registry=None,
                 warn: Callable[[str], None] | None = None, evaluate: bool = True,
                 rule_engine: Callable[[dict, list], Any] | None = None,
                 events: Callable[[Any, tuple[float, float]], list] | None = None) -> None:
        """``rule_engine(rules, activities) -> RuleEngine`` and ``events(runtime, window) -> [Event]`` default to
        edge_runtime/alerts/rules/ and edge_runtime/query/happened.py; ``evaluate=False`` runs no
        evaluation thread (alerts come through ``raise_alert`` only)."""
        self.settings = settings
        self.site = settings.site
        self._warn = warn or (lambda msg: log.warning(msg))
        self.metrics = AlertMetrics(registry)
        self.sinks: list = []
        self.mqtt = None
        if settings.mqtt is not None:
            from edge_runtime.alerts.mqtt_sink import MqttSink

            self.mqtt = MqttSink(settings.mqtt, settings.site)
            self.sinks.append(self.mqtt)
            self.metrics.broker_connected.set_function(lambda: float(self.mqtt.connected))
        if settings.webhooks:
            from edge_runtime.alerts.webhook_sink import WebhookSink

            inline = self._evidence_image if settings.evidence.webhook_inline else None
            self.sinks += [WebhookSink(u, timeout_s=settings.webhook_timeout_s, inline=inline) for u in settings.webhooks]
        self.till = None
        if settings.scans == "pos":
            from edge_runtime.alerts.till_feed import TillFeed

            self.till = TillFeed(state_dir, self.metrics, self._warn)
        self.outbox = Outbox(state_dir, sinks=[s.name for s in self.sinks], max_alerts=settings.outbox.max_alerts,
                             warn=self._warn)
        for s in self.sinks:
            self.metrics.pending.labels(sink=_label(s)).set_function(
                lambda name=s.name: float(self.outbox.pending().get(name, 0)))
        self.metrics.watch_precision(self._precision_values)
        from edge_runtime.alerts.nudge import Nudger

        self.nudger = Nudger(settings.nudge, mqtt=self.mqtt)
        self.workers = {s.name: SinkWorker(self.outbox, s, on_delivered=self._delivered, on_error=self._error).start()
                        for s in self.sinks}
        self.last_error: str | None = None
        self.state_dir = Path(state_dir)
        self.verifier: Verifier | None = None
        self._verdicts_since_fit = 0   # verdicts given since the verifier was last fitted (verifier.learn_every)
        try:
            self.verifier = Verifier.load(self.state_dir)
        except VerifierError as err:
            self._warn(f"alerts: {err}; alerts pass unverified")
        self.evaluator = Evaluator(settings, raise_alert=self.raise_alert, nudge_early=self.nudge_early,
                                   clear_alert=self.clear_alert, clear_nudge=self.clear_nudge,
                                   stored=self._stored,
                                   on_error=self._evaluation_failed,
                                   mqtt=self.mqtt, till=self.till, rule_engine=rule_engine, events=events)
        if evaluate and settings.enabled:
            self.evaluator.start()

    @property
    def pos(self):
        """The till's scans (PosScans), None without ``alerts.scans: pos``."""
        return self.till.scans if self.till is not None else None

    @property
    def transactions(self):
        """The till's transactions (TillTransactions), None without ``alerts.scans: pos``."""
        return self.till.transactions if self.till is not None else None

    @property
    def note(self) -> str | None:
        """Why alerts are not (all) evaluated: no rules, or a stream's rules its bundle cannot evaluate."""
        return self.evaluator.note if self.settings.enabled else NO_RULES

    @property
    def evaluations(self) -> int:
        return self.evaluator.evaluations

    def open_lanes(self, streams: list[str]) -> None:
        """Connect each stream's MQTT lane now, so its status topic says online before any commit."""
        if self.mqtt is not None:
            for name in streams:
                self.mqtt.lane(name)

    # -- raising ---------------------------------------------------------------------------------
    def raise_alert(self, draft: dict[str, Any], *, stream: str, stream_time: float | None = None,
                    wall_origin: float | None = None, memory_began: float | None = None,
                    ring=None) -> tuple[Alert, bool]:
        """Store a rule's draft as an alert of ``stream`` and wake the sinks; -> (alert, new). An alert
        whose id is already stored is not stored or sent again (new is False). OutboxError if the
        store cannot be written (the alert is lost: counted, and said in the status). ``memory_began``:
        when the stream's memory began empty; alerts stored before it are of an earlier memory. ``ring``:
        the stream's recent item crops (``StreamState.evidence``), from which its evidence is taken;
        once stored, its nudge goes (never holding it up)."""
        alert = from_draft(draft, site=self.site, stream=stream, stream_time=stream_time,
                           wall_origin=wall_origin, bucket_s=self.settings.id_bucket_s)
        try:
            same = self._same_incident(alert, memory_began)
            if same is not None:
                return same, False
            if self.outbox.get(alert.id) is not None:
                # its id's 30 s bucket holds another item of the product (their intervals do not overlap):
                # this one gets an id of its own, not folded into that one
                alert = alert.model_copy(update={"id": another_item_id(alert.id, alert.start)})
            alert = self._verified(alert)
            alert, keep, jpegs = self._with_evidence(alert, ring, wall_origin)
            new = self.outbox.add(alert, evidence=keep, jpegs=jpegs, send=not alert.held)
        except OutboxError as err:
            self.last_error = f"an alert could not be stored: {err}"
            raise
        if new and alert.held:
            self.metrics.held.labels(stream=stream, rule=alert.rule).inc()
        elif new:
            self.metrics.raised.labels(stream=stream, rule=alert.rule).inc()
            for w in self.workers.values():
                w.kick()
            self.nudger.send(alert)
        return alert, new

    def nudge_early(self, draft: dict[str, Any], *, stream: str, stream_time: float | None = None,
                    wall_origin: float | None = None) -> Alert | None:
        """A rule's early nudge (a bag under way that would raise an alert): to the kiosk's screen only,
        never stored; none where the verifier would hold its alert. -> what was nudged, else None."""
        alert = self._verified(from_draft(draft, site=self.site, stream=stream, stream_time=stream_time,
                                          wall_origin=wall_origin, bucket_s=self.settings.id_bucket_s))
        if alert.held:
            return None
        self.nudger.send(alert, early=True)
        return alert

    def clear_nudge(self, nudge: Alert, cleared: dict[str, Any]) -> None:
        """An early nudge whose item was scanned or put back after it, before any alert: the nudge again,
        with ``cleared`` (the screen takes its prompt back); nothing is stored."""
        self.nudger.send(nudge.model_copy(update={"cleared": Cleared(**cleared, at=time.time())}), early=True)

    def clear_alert(self, alert_id: str, cleared: dict[str, Any]) -> Alert | None:
        """An item alert whose item was scanned or put back after it (edge_runtime/alerts/cleared.py):
        stored with ``cleared``, sent again to the sinks, and its nudge again (the screen takes back its
        prompt); -> the alert, None when unknown or cleared before. OutboxError as ``raise_alert``."""
        try:
            alert = self.outbox.clear(alert_id, Cleared(**cleared, at=time.time()))
        except OutboxError as err:
            self.last_error = f"an alert could not be cleared: {err}"
            raise
        if alert is None:
            return None
        self.metrics.cleared.labels(stream=alert.stream, rule=alert.rule, why=alert.cleared.why).inc()
        if not alert.held:
            for w in self.workers.values():
                w.kick()
            self.nudger.send(alert)
        return alert

    def _stored(self, stream: str) -> list[Alert]:
        """The stream's newest stored alerts, as many as a watch holds (the evaluator's after a restart)."""
        return [a for _, a in self.outbox.list(stream=stream, limit=MAX_WATCHED)]

    def _verified(self, alert: Alert) -> Alert:
        """The alert with its verifier's p(right), held when that is below ``verifier.hold_below``."""
        if self.verifier is None:
            return alert
        p, held = self.verifier.judge(alert.stream, alert.model_dump(), self.settings.verifier.hold_below)
        return alert if p is None else alert.model_copy(update={"p_right": round(p, 4), "held": held})

    def learn(self) -> dict[str, Any]:
        """Fit the verifier on the verdicts stored (each stream's rule's last ``verifier.verdicts``), save it
        (``<state dir>/verifier.json``) and use it for the alerts raised from now on; -> its summary."""
        vs = self.settings.verifier
        judged = [(a.stream, a.model_dump(), outcome) for a, outcome in self.outbox.judged(vs.verdicts)]
        verifier = fit(judged, min_verdicts=vs.min_verdicts, hold_below=vs.hold_below)
        self.verifier, self._verdicts_since_fit = verifier, 0
        try:
            verifier.save(self.state_dir)
        except OSError as err:  # a full or read-only disk: used now, lost at the next start (said)
            return {**self.verifier_status(), "note": f"not saved ({' '.join(str(err).split())[:160]}): "
                                                      f"used until the runtime stops"}
        return self.verifier_status()

    def verifier_status(self) -> dict[str, Any]:
        vs = self.settings.verifier
        base = {"hold_below": vs.hold_below, "min_verdicts": vs.min_verdicts}
        if self.verifier is None:
            return {**base, "fitted_at": None, "pairs": {},
                    "note": f"not fitted yet: it is fitted after every {vs.learn_every or 'no'} verdicts given, "
                            f"and by `lvm-edge alerts learn`"}
        return {**base, **self.verifier.summary()}

    def _with_evidence(self, alert: Alert, ring, wall_origin: float | None) -> tuple[Alert, str, list[bytes]]:
        """The alert with its ``images`` (picked from the stream's ring), what its stream keeps, the JPEGs."""
        from edge_runtime.alerts import evidence

        ev = self.settings.evidence
        keep = ev.keep_for(alert.stream)
        crops = evidence.pick(alert, ring) if keep != "off" else []
        if not crops:
            return alert, keep, []
        images = evidence.images(alert.id, crops, wall_origin, ev.url_base)
        return alert.model_copy(update={"images": images}), keep, [c.jpeg for _, c in crops]

    def _evidence_image(self, alert_id: str, k: int) -> bytes | None:
        return self.outbox.evidence_image(alert_id, k)

    def keep_evidence(self, runtime) -> None:
        """The stream keeps the crops its alerts' evidence is taken from, as ``alerts.evidence`` says."""
        st = runtime.stream
        if getattr(st, "items", None) is None:  # no event path: no item tracks to crop
            return
        ev = self.settings.evidence
        st.keep_evidence(ev.keep_for(runtime.name), ev.ring_bytes)

    def _same_incident(self, alert: Alert, memory_began: float | None = None) -> Alert | None:
        """A stored alert of the same stream and rule whose interval overlaps ``alert``'s: the same item, raised
        again (after a restart), or named otherwise (a catalog product added since: its id hashes the
        product's name). One hand moves one item at a time, as the rules assume. Alerts raised before
        ``memory_began`` are of an earlier memory of the stream (its times restarted at 0 since)."""
        for _, old in self.outbox.list(stream=alert.stream, limit=SAME_INCIDENT_SCAN):
            if memory_began is not None and old.raised_at < memory_began:
                continue
            if old.rule == alert.rule and old.start <= alert.end and alert.start <= old.end \
                    and not _other_items(old, alert):
                return old
        return None

    def _delivered(self, sink: str, n: int) -> None:
        self.metrics.delivered.labels(sink=sink_label(sink)).inc(n)

    def _error(self, sink: str) -> None:
        self.metrics.delivery_errors.labels(sink=sink_label(sink)).inc()

    # -- the commit hook and the till's feed -----------------------------------------------------
    def committed(self, runtime) -> None:
        """A stream committed a clip: evaluate its rules soon (on the evaluation thread)."""
        if not self.evaluator.running:
            return
        if not self.evaluator.knows(runtime.name):  # its first commit: from now on it keeps its crops
            self.keep_evidence(runtime)
        self.evaluator.mark(runtime)

    def wait_idle(self, timeout: float) -> bool:
        """Until every commit marked so far is evaluated; False if that takes longer than ``timeout``."""
        return self.evaluator.wait_idle(timeout)

    def forget(self, stream: str) -> None:
        """A stream removed from the runtime: no more ticks for it (its alerts stay in the outbox)."""
        self.evaluator.forget(stream)

    def evaluate(self, runtime) -> list[Alert]:
        """Run one stream's rules over what happened since its last evaluation; -> the new alerts."""
        return self.evaluator.evaluate(runtime)

    def tick(self, runtime) -> list[Alert]:
        """Make the decisions of ``runtime``'s rules that are due by the stream's time now (Evaluator.tick)."""
        return self.evaluator.tick(runtime)

    def _evaluation_failed(self, stream: str, err: Exception) -> None:
        """A stream's evaluation or tick raised (called in its ``except``): counted, said once."""
        self.metrics.evaluation_errors.labels(stream=stream).inc()
        msg = f"{stream}: rule evaluation failed: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        if msg != self.last_error:  # one line (the traceback at debug level, for a developer)
            log.warning("alerts: %s", msg)
            log.debug("alerts: rule evaluation traceback", exc_info=True)
        self.last_error = msg

    def add_pos_scans(self, stream: str, scans: list[tuple[str, float]], now: float, runtime=None) -> int:
        """The till's scans of ``stream`` (product, stream seconds), ``now`` the stream's time (its newest
        frame); -> how many were new and kept (PosScans.add). With ``runtime`` (the stream's), its item
        state matches each read to the track over the scanner then (TillFeed.add_scans). ValueError
        when this runtime does not take them (``alerts.scans`` is not pos); PosScanError when the
        file cannot be written."""
        if self.till is None:
            raise ValueError("this runtime does not take the till's scans (set alerts.scans: pos in its config)")
        return self.till.add_scans(stream, scans, now, runtime)

    def add_till_transactions(self, stream: str, marks: list[tuple[str, float]], now: float) -> dict[str, int]:
        """The till's transaction starts and ends of ``stream`` ("start" | "end", stream seconds);
        TillTransactions.add's counts. ValueError when this runtime does not take the till's feed;
        TillError (an end with no start) and TillStoreError as TillTransactions.add."""
        if self.till is None:
            raise ValueError("this runtime does not take the till's feed (set alerts.scans: pos in its config)")
        return self.till.add_transactions(stream, marks, now)

    # -- reading ---------------------------------------------------------------------------------
    def list(self, **filters) -> list[tuple[int, Alert]]:
        return self.outbox.list(**filters)

    def ack(self, alert_id: str, verdict: Verdict | None = None) -> Alert | None:
        """Acknowledge an alert, with staff's verdict or none; None for an unknown id (nothing stored changes)."""
        alert = self.outbox.ack(alert_id, verdict)
        if alert is not None and verdict is not None:
            self.metrics.verdicts.labels(stream=alert.stream, rule=alert.rule, outcome=verdict.outcome).inc()
            self._verdicts_since_fit += 1
            every = self.settings.verifier.learn_every
            if every and self._verdicts_since_fit >= every:
                try:
                    self.learn()  # milliseconds: a few thousand verdicts at most, seven numbers each
                except OutboxError as err:  # the verdict is stored; the next one tries again
                    self._warn(f"alerts: the verifier was not fitted again: {err}")
        return alert

    def precision(self, stream: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """stream -> rule -> its precision over its last ``alerts.precision_verdicts`` verdicts: right
        (confirmed or customer_fixed: the alert was real) / all, with the count of each outcome; null
        and ``verdicts`` 0 before any. Every stream and rule with an alert stored, and the rules of
        ``stream`` and of the streams that committed here."""
        counts = self.outbox.rule_verdicts(self.settings.precision_verdicts)
        pairs = set(counts) | set(self.outbox.stream_rules_stored())
        for name in {*self.evaluator.streams(), *([stream] if stream is not None else [])}:
            pairs |= {(name, rule) for rule in self.settings.rules_for(name)}
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, rule in sorted(pairs):
            c = counts.get((name, rule), {})
            n = sum(c.values())
            right = sum(c.get(o, 0) for o in RIGHT_OUTCOMES)
            out.setdefault(name, {})[rule] = {"precision": right / n if n else None, "verdicts": n,
                                              **{o: c.get(o, 0) for o in OUTCOMES}}
        return out

    def _precision_values(self) -> dict[tuple[str, str], float]:
        """(stream, rule) -> precision, for the pairs with a verdict (the /metrics gauge); nothing when the
        store cannot be read (the status says why)."""
        try:
            counts = self.outbox.rule_verdicts(self.settings.precision_verdicts)
        except OutboxError:
            return {}
        return {k: sum(c.get(o, 0) for o in RIGHT_OUTCOMES) / sum(c.values()) for k, c in counts.items()}

    def status(self, stream: str | None = None) -> dict[str, Any]:
        """The service's state; counts and sinks are the site's (every stream's). ``stream``: also the
        rules that stream evaluates, each with its thresholds (defaults, the site's and the stream's
        changes applied), as ``stream_rules``."""
        try:
            counts, pending, precision = self.outbox.counts(), self.outbox.pending(), self.precision(stream)
        except Exception as err:  # the status must answer even when the store cannot
            counts, pending, precision = {}, {}, None
            self.last_error = f"alerts.db: {' '.join(str(err).split())[:200]}"
        sinks = []
        for s in self.sinks:
            sinks.append({"sink": _label(s), "pending": pending.get(s.name), **self.workers[s.name].status(),
                          **({"connected": self.mqtt.connected} if s is self.mqtt else {})})
        return {"enabled": self.settings.enabled, "note": self.note, "site": self.site,
                "rules": self.settings.rule_names(), "scans": self.settings.scans,
                "pos_scans_received": self.pos.received if self.pos is not None else None,
                "pos_scans_last_at": self.pos.last_received_at if self.pos is not None else None,
                "pending": sum(pending.values()), **counts,
                "broker": self.mqtt.status() if self.mqtt is not None else None, "sinks": sinks,
                "evaluations": self.evaluations, "last_error": self.last_error or self.outbox.last_error,
                "precision_verdicts": self.settings.precision_verdicts, "precision": precision,
                "evidence": self._evidence_status(), "nudge": self.nudger.status(),
                "verifier": self.verifier_status(),
                **({"stream_rules": self.stream_rules(stream)} if stream is not None else {})}

    def _evidence_status(self) -> dict[str, Any]:
        try:
            n, total = self.outbox.evidence_bytes()
        except OutboxError:
            n, total = None, None
        ev = self.settings.evidence
        return {"keep": ev.keep, "streams": dict(ev.streams), "ring_bytes": ev.ring_bytes,
                "alerts_with_images": n, "bytes": total}

    def stream_rules(self, stream: str) -> dict[str, dict[str, float]]:
        from edge_runtime.alerts.rules import RULES

        return {name: {**RULES[name].thresholds, **changes} for name, changes in self.settings.rules_for(stream).items()
                if name in RULES}

    def close(self, timeout: float = 5.0) -> None:
        """Evaluate what is marked, stop delivering (what is undelivered stays in the outbox), say offline."""
        self.evaluator.close(timeout)
        for w in self.workers.values():
            w.stop(timeout)
        self.nudger.close(min(timeout, 1.0))
        for s in self.sinks:
            s.close(2.0)
        self.outbox.close()
        if self.till is not None:
            self.till.close()


def _other_items(a: Alert, b: Alert) -> bool:
    """Both alerts name the tracked items they are of (their evidence's ``item``), and none is the same:
    two items, such as two left in one basket, not one item raised again."""
    items_a = {e.get("item") for e in a.evidence} - {None}
    items_b = {e.get("item") for e in b.evidence} - {None}
    return bool(items_a) and bool(items_b) and not items_a & items_b


def _label(sink) -> str:
    return sink_label(sink.name)
