"""What a runtime holds for alerts: the outbox, its sinks and their delivery threads, a rule engine
per stream, and the commit hook.

At every commit of a stream (``committed``, called from the stream's intake thread) the stream is
only marked; one evaluation thread then asks what happened in that stream since its last
evaluation (with ``OVERLAP_S`` of overlap, as an event may have been cut by the previous window's
end), runs the stream's RuleEngine on those events, and stores each draft it returns as an Alert in
the outbox, which wakes the sinks' threads. Between commits the same thread makes the decisions that
fall due (``tick``, every ``TICK_S`` while one waits). Nothing of this runs on the intake thread, so
neither a slow rule nor a lost broker slows the stream.

With ``alerts.scans: pos`` the service also keeps the till's scans (edge_runtime/alerts/pos_scans.py,
``add_pos_scans``) and hands each evaluation those of the last ``KEEP_S``, and its transactions
(edge_runtime/alerts/till_transactions.py, ``add_till_transactions``), ended ones among the events.

The rules (edge_runtime/alerts/rules/) and the events (edge_runtime/query/happened.py) are
imported when first needed: a runtime without alert rules never loads them.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from edge_runtime.alerts.dispatcher import SinkWorker
from edge_runtime.alerts.metrics import AlertMetrics
from edge_runtime.alerts.outbox import Outbox, OutboxError, sink_label
from edge_runtime.alerts.record import OUTCOMES, RIGHT_OUTCOMES, Alert, Verdict, another_item_id, from_draft
from edge_runtime.alerts.settings import AlertSettings

log = logging.getLogger("lvm_edge")

OVERLAP_S = 30.0          # each evaluation reads this much before the previous one's end again
# a stream's first evaluation (a restart with a restored memory of hours) reads only this far back:
# the rules ignore events that ended longer ago than that (rules.KEEP_S)
FIRST_LOOKBACK_S = 900.0
# while a rule's decision waits (a bag's settle_s, rules.RuleEngine.next_due), the evaluation thread wakes
# this often to make it once it is due, with the stream's newest frame time as "now": the decision needs
# no new event, so its alert need not wait for the next commit (a clip later: 16 s for lvm-tiny)
TICK_S = 1.0
NO_RULES = "alerts: no rules configured"
# a raised alert is compared with this many of its stream's newest stored alerts for the same item
# (FIRST_LOOKBACK_S of events re-read after a restart raise far fewer)
SAME_INCIDENT_SCAN = 200


def no_alerts_status() -> dict[str, Any]:
    """The ``alerts`` section of /v1/status of a runtime without alert rules or sinks."""
    return {"enabled": False, "note": NO_RULES}


def _events_since(runtime, window: tuple[float, float]) -> list:
    """What happened in ``window`` of a stream (edge_runtime/query/happened.py)."""
    from edge_runtime.alerts.rule_events import rule_events

    return rule_events(runtime, runtime.name, window)


def _evaluable(stream) -> tuple[float, float | None]:
    """(from, to) of what a stream's rules can read now: its memory's coverage, or with an event path
    every frame in so far (item events are decided frame by frame, not at commits)."""
    if getattr(stream, "items", None) is not None:
        return 0.0, stream.last_input
    cov = stream.coverage
    return cov["start"], cov["end"]


class AlertService:
    def __init__(self, settings: AlertSettings, state_dir: str | Path, *, registry=None,
                 warn: Callable[[str], None] | None = None, evaluate: bool = True,
                 rule_engine: Callable[[dict, list], Any] | None = None,
                 events: Callable[[Any, tuple[float, float]], list] | None = None) -> None:
        """``rule_engine(rules, activities) -> RuleEngine`` and ``events(runtime, window) -> [Event]`` default to
        edge_runtime/alerts/rules/ and edge_runtime/query/happened.py; ``evaluate=False`` runs no
        evaluation thread (alerts come through ``raise_alert`` only)."""
        self.settings = settings
        self._rule_engine, self._events = rule_engine, events or _events_since
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
        self.pos = self.transactions = None
        if settings.scans == "pos":
            from edge_runtime.alerts.pos_scans import PosScans
            from edge_runtime.alerts.till_transactions import TillTransactions

            self.pos = PosScans(state_dir, warn=self._warn)
            self.transactions = TillTransactions(state_dir, warn=self._warn)
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
        self.note: str | None = None if settings.enabled else NO_RULES
        self.last_error: str | None = None
        self._engines: dict[str, Any] = {}      # stream -> RuleEngine
        self._evaluated_to: dict[str, float] = {}
        self._seen_events: dict[str, set] = {}
        self._marked: dict[str, Any] = {}       # stream -> its Runtime, committed since the last evaluation
        self._runtimes: dict[str, Any] = {}     # stream -> its Runtime (for the ticks between commits)
        self._cv = threading.Condition()
        self._closing = False
        self._busy = False
        self.evaluations = 0
        self._thread = None
        if evaluate and settings.enabled:
            self._thread = threading.Thread(target=self._evaluate_loop, name="lvm-alerts-rules", daemon=True)
            self._thread.start()

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
            alert, keep, jpegs = self._with_evidence(alert, ring, wall_origin)
            new = self.outbox.add(alert, evidence=keep, jpegs=jpegs)
        except OutboxError as err:
            self.last_error = f"an alert could not be stored: {err}"
            raise
        if new:
            self.metrics.raised.labels(stream=stream, rule=alert.rule).inc()
            for w in self.workers.values():
                w.kick()
            self.nudger.send(alert)
        return alert, new

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

    # -- the commit hook -------------------------------------------------------------------------
    def committed(self, runtime) -> None:
        """A stream committed a clip: evaluate its rules soon (on the evaluation thread)."""
        if self._thread is None:
            return
        if runtime.name not in self._runtimes:  # its first commit: from now on it keeps its crops
            self.keep_evidence(runtime)
        with self._cv:
            self._marked[runtime.name] = self._runtimes[runtime.name] = runtime
            self._cv.notify_all()  # all: wait_idle waits on this condition too

    def wait_idle(self, timeout: float) -> bool:
        """Until every commit marked so far is evaluated; False if that takes longer than ``timeout``."""
        with self._cv:
            return self._cv.wait_for(lambda: not (self._marked or self._busy), timeout)

    def _evaluate_loop(self) -> None:
        while True:
            with self._cv:
                self._busy = False
                self._cv.notify_all()
                while not self._marked and not self._closing:
                    # a decision waiting: wake to make it when due; else sleep until a commit
                    if not self._cv.wait(TICK_S if self._waiting() else None):
                        break
                if self._closing and not self._marked:
                    return
                marked, self._marked = self._marked, {}
                self._busy = True
            for rt in marked.values():
                self._guarded(rt, self.evaluate)
            for rt in list(self._runtimes.values()):
                self._guarded(rt, self.tick)

    def _guarded(self, rt, step) -> None:
        try:
            step(rt)
        except Exception as err:  # a failing rule or event read must not end the others: said, counted
            self.metrics.evaluation_errors.labels(stream=rt.name).inc()
            msg = f"{rt.name}: rule evaluation failed: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
            if msg != self.last_error:  # one line (the traceback at debug level, for a developer)
                log.warning("alerts: %s", msg)
                log.debug("alerts: rule evaluation traceback", exc_info=True)
            self.last_error = msg

    def _waiting(self) -> bool:
        """Whether any stream's rules hold a decision that waits for time to pass (RuleEngine.next_due)."""
        return any(getattr(self._engines.get(name), "next_due", lambda: None)() is not None for name in self._runtimes)

    def forget(self, stream: str) -> None:
        """A stream removed from the runtime: no more ticks for it (its alerts stay in the outbox)."""
        with self._cv:
            self._runtimes.pop(stream, None)
            self._marked.pop(stream, None)

    @staticmethod
    def _stream_now(runtime) -> float | None:
        """The stream's time now: its newest frame's (``stream_now``), else its memory's end."""
        end = runtime.stream.coverage["end"]
        now = getattr(runtime, "stream_now", None)
        return end if now is None else now if end is None else max(float(now), float(end))

    def tick(self, runtime) -> list[Alert]:
        """Make the decisions of ``runtime``'s rules that are due by the stream's time now, between
        commits (no new events: a decision that waits needs only the time and the till's scans)."""
        engine = self._engines.get(runtime.name)
        due = getattr(engine, "next_due", lambda: None)() if engine is not None else None
        now = self._stream_now(runtime) if due is not None else None
        if now is None or now < due:
            return []
        return self._raise(engine.evaluate(self._transactions(runtime, now), now, self._till(runtime, now)), runtime, now)

    def _engine(self, runtime):
        if runtime.name not in self._engines:
            factory = self._rule_engine
            if factory is None:
                from edge_runtime.alerts.rules import RuleEngine as factory
            self._engines[runtime.name] = factory(self.settings.rules_for(runtime.name), runtime.engine.event_activities,
                                                  self.settings.scans)
        return self._engines[runtime.name]

    def evaluate(self, runtime) -> list[Alert]:
        """Run one stream's rules over what happened since its last evaluation; -> the new alerts."""
        if self.mqtt is not None:
            self.mqtt.lane(runtime.name)  # its status topic goes online with the stream's first commit
        if not self.settings.rules_for(runtime.name):
            return []
        try:
            engine = self._engine(runtime)
        except ValueError as err:  # a stream added at run time whose rules the bundle cannot evaluate
            self.note = f"alerts: {runtime.name}: {err}"
            return []
        first, now = _evaluable(runtime.stream)
        if now is None:
            return []
        last = self._evaluated_to.get(runtime.name)
        if last is not None and now <= last:  # nothing new since (a memory commit with no new frame)
            return []
        start = now - FIRST_LOOKBACK_S if last is None else last - OVERLAP_S
        window = (max(first, start), now)
        if window[1] <= window[0]:
            return []
        events = self._events(runtime, window)
        self._evaluated_to[runtime.name] = now
        self.evaluations += 1
        if self.mqtt is not None and self.settings.mqtt.publish_events:
            self._publish_events(runtime.name, events)
        out = self._raise(engine.evaluate(events + self._transactions(runtime, now), now, self._till(runtime, now)),
                          runtime, now)
        self.note = None
        return out

    def _till(self, runtime, until: float) -> list:
        """The till's scans of ``runtime``'s stream known by ``until`` (the last KEEP_S; [] without pos)."""
        if self.pos is None:
            return []
        from edge_runtime.alerts.rules import KEEP_S

        since = until - KEEP_S
        demo_till = [r for r in getattr(runtime, "till_reads", lambda until: [])(until) if r[1] >= since]
        if demo_till:  # a demo:// stream brings its checkout's till
            self.add_pos_scans(runtime.name, demo_till, until)
        return self.pos.recent(runtime.name, since)

    def _transactions(self, runtime, until: float) -> list:
        """The till's transactions of ``runtime``'s stream that ended in the last KEEP_S by ``until``, as
        events ([] without pos); a demo:// stream brings its checkout's."""
        if self.transactions is None:
            return []
        from edge_runtime.alerts.rules import KEEP_S

        since = until - KEEP_S
        # all of them: an end's start may lie before ``since`` (the store drops the old ones again)
        demo = getattr(runtime, "till_transactions", lambda until: [])(until)
        if demo:
            self.add_till_transactions(runtime.name, demo, until)
        return [e for e in self.transactions.recent(runtime.name, since) if e.end <= until]

    def _raise(self, drafts: list[dict], runtime, stream_time: float) -> list[Alert]:
        out = []
        for draft in drafts:
            alert, new = self.raise_alert(draft, stream=runtime.name, stream_time=stream_time,
                                          wall_origin=getattr(runtime, "wall_origin", None),
                                          memory_began=getattr(runtime, "memory_began", None),
                                          ring=getattr(runtime.stream, "evidence", None))
            if new:
                out.append(alert)
        return out

    def _publish_events(self, stream: str, events: list) -> None:
        seen = self._seen_events.setdefault(stream, set())
        fresh = []
        for e in events:
            d = e.to_dict() if hasattr(e, "to_dict") else dict(e)
            key = (d.get("activity"), d.get("product"), round(float(d.get("start", 0)), 1))
            if key not in seen:
                seen.add(key)
                fresh.append({**d, "site": self.site, "stream": stream})
        if len(seen) > 10_000:  # the overlap needs only the recent ones
            seen.clear()
        self.mqtt.publish_events(stream, fresh)

    def add_pos_scans(self, stream: str, scans: list[tuple[str, float]], now: float) -> int:
        """The till's scans of ``stream`` (product, stream seconds), ``now`` the stream's time (its newest
        frame); -> how many were new and kept (PosScans.add). ValueError
        when this runtime does not take them (``alerts.scans`` is not pos); PosScanError when the
        file cannot be written."""
        if self.pos is None:
            raise ValueError("this runtime does not take the till's scans (set alerts.scans: pos in its config)")
        new = self.pos.add(stream, scans, now)
        self.metrics.pos_scans.labels(stream=stream).inc(new)
        return new

    def add_till_transactions(self, stream: str, marks: list[tuple[str, float]], now: float) -> dict[str, int]:
        """The till's transaction starts and ends of ``stream`` ("start" | "end", stream seconds);
        TillTransactions.add's counts. ValueError when this runtime does not take the till's feed;
        TillError (an end with no start) and TillStoreError as TillTransactions.add."""
        if self.transactions is None:
            raise ValueError("this runtime does not take the till's feed (set alerts.scans: pos in its config)")
        return self.transactions.add(stream, marks, now)

    # -- reading ---------------------------------------------------------------------------------
    def list(self, **filters) -> list[tuple[int, Alert]]:
        return self.outbox.list(**filters)

    def ack(self, alert_id: str, verdict: Verdict | None = None) -> Alert | None:
        """Acknowledge an alert, with staff's verdict or none; None for an unknown id (nothing stored changes)."""
        alert = self.outbox.ack(alert_id, verdict)
        if alert is not None and verdict is not None:
            self.metrics.verdicts.labels(stream=alert.stream, rule=alert.rule, outcome=verdict.outcome).inc()
        return alert

    def precision(self, stream: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """stream -> rule -> its precision over its last ``alerts.precision_verdicts`` verdicts: right
        (confirmed or customer_fixed: the alert was real) / all, with the count of each outcome; null
        and ``verdicts`` 0 before any. Every stream and rule with an alert stored, and the rules of
        ``stream`` and of the streams that committed here."""
        counts = self.outbox.rule_verdicts(self.settings.precision_verdicts)
        pairs = set(counts) | set(self.outbox.stream_rules_stored())
        for name in {*self._runtimes, *([stream] if stream is not None else [])}:
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
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for w in self.workers.values():
            w.stop(timeout)
        self.nudger.close(min(timeout, 1.0))
        for s in self.sinks:
            s.close(2.0)
        self.outbox.close()
        if self.pos is not None:
            self.pos.close()
            self.transactions.close()


def _other_items(a: Alert, b: Alert) -> bool:
    """Both alerts name the tracked items they are of (their evidence's ``item``), and none is the same:
    two items, such as two left in one basket, not one item raised again."""
    items_a = {e.get("item") for e in a.evidence} - {None}
    items_b = {e.get("item") for e in b.evidence} - {None}
    return bool(items_a) and bool(items_b) and not items_a & items_b


def _label(sink) -> str:
    return sink_label(sink.name)
