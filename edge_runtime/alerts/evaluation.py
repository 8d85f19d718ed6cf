"""The rules' evaluation thread of an AlertService (edge_runtime/alerts/service.py) and its bookkeeping
per stream: the stream's RuleEngine, how far it was evaluated, the events already published.

At every commit of a stream (``mark``, called from the stream's intake thread) the stream is only
marked; the one evaluation thread then asks what happened in that stream since its last evaluation
(with ``OVERLAP_S`` of overlap, as an event may have been cut by the previous window's end), runs the
stream's RuleEngine on those events (and, with the till, its scans and ended transactions:
edge_runtime/alerts/till_feed.py), and hands each draft it returns to ``raise_alert``. Between commits
the same thread makes the decisions that fall due (``tick``, every ``TICK_S`` while one waits), and
watches each item alert for its item being scanned or put back (edge_runtime/alerts/cleared.py).
Nothing of this runs on the intake thread, so neither a slow rule nor a lost broker slows the stream.

The rules (edge_runtime/alerts/rules/) and the events (edge_runtime/query/happened.py) are imported
when first needed: a runtime without alert rules never loads them.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from edge_runtime.alerts.cleared import ClearWatch
from edge_runtime.alerts.record import Alert
from edge_runtime.alerts.settings import AlertSettings

OVERLAP_S = 30.0          # each evaluation reads this much before the previous one's end again
# a stream's first evaluation (a restart with a restored memory of hours) reads only this far back:
# the rules ignore events that ended longer ago than that (rules.KEEP_S)
FIRST_LOOKBACK_S = 900.0
# while a rule's decision waits (a bag's settle_s, rules.RuleEngine.next_due), the evaluation thread wakes
# this often to make it once it is due, with the stream's newest frame time as "now": the decision needs
# no new event, so its alert need not wait for the next commit (a clip later: 16 s for lvm-tiny)
TICK_S = 1.0


def entering_events(runtime) -> list:
    """A stream's bags under way now, for the rules' early nudges (edge_runtime/alerts/rule_events.py)."""
    from edge_runtime.alerts.rule_events import entering_events as entering

    return entering(runtime)


def events_since(runtime, window: tuple[float, float]) -> list:
    """What happened in ``window`` of a stream (edge_runtime/query/happened.py)."""
    from edge_runtime.alerts.rule_events import rule_events

    return rule_events(runtime, runtime.name, window)


def evaluable(stream) -> tuple[float, float | None]:
    """(from, to) of what a stream's rules can read now: its memory's coverage, or with an event path
    every frame in so far (item events are decided frame by frame, not at commits)."""
    if getattr(stream, "items", None) is not None:
        return 0.0, stream.last_input
    cov = stream.coverage
    return cov["start"], cov["end"]


def stream_now(runtime) -> float | None:
    """The stream's time now: its newest frame's (``stream_now``), else its memory's end."""
    end = runtime.stream.coverage["end"]
    now = getattr(runtime, "stream_now", None)
    return end if now is None else now if end is None else max(float(now), float(end))


class Evaluator:
    def __init__(self, settings: AlertSettings, *, raise_alert: Callable[..., tuple[Alert, bool]],
                 on_error: Callable[[str, Exception], None], nudge_early: Callable[..., None] | None = None,
                 clear_alert: Callable[..., None] | None = None, clear_nudge: Callable[..., None] | None = None,
                 stored: Callable[[str], list[Alert]] | None = None,
                 mqtt=None, till=None,
                 rule_engine: Callable[[dict, list], Any] | None = None,
                 events: Callable[[Any, tuple[float, float]], list] | None = None) -> None:
        """``raise_alert``: AlertService.raise_alert; ``nudge_early``: AlertService.nudge_early (None: early
        nudges are dropped); ``clear_alert(alert_id, cleared)`` and ``clear_nudge(nudge, cleared)``:
        AlertService's (None: none is cleared); ``stored(stream)``: the stream's newest stored alerts (watched
        again after a restart that restored the stream's item state; None: none); ``on_error(stream, err)``: a step of a stream failed
        (called inside the ``except``); ``mqtt``: the MqttSink (its lanes, the published events) or None;
        ``till``: the TillFeed or None; ``rule_engine`` and ``events`` as AlertService's."""
        self.settings = settings
        self.raise_alert, self.on_error, self.nudge_early = raise_alert, on_error, nudge_early
        self.clear_alert, self.clear_nudge, self.stored = clear_alert, clear_nudge, stored
        self.mqtt, self.till = mqtt, till
        self.rule_engine, self.events = rule_engine, events or events_since
        self.note: str | None = None  # why a stream's rules are not evaluated (a stream added at run time)
        self.evaluations = 0
        self._engines: dict[str, Any] = {}      # stream -> RuleEngine
        self._evaluated_to: dict[str, float] = {}
        self._seen_events: dict[str, set] = {}
        self._marked: dict[str, Any] = {}       # stream -> its Runtime, committed since the last evaluation
        self._runtimes: dict[str, Any] = {}     # stream -> its Runtime (for the ticks between commits)
        self._watches: dict[str, ClearWatch] = {}  # stream -> its item alerts and early nudges not cleared yet
        self._cv = threading.Condition()
        self._closing = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def start(self) -> "Evaluator":
        self._thread = threading.Thread(target=self._loop, name="lvm-alerts-rules", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the evaluation thread was started (commits are then marked for it)."""
        return self._thread is not None

    def knows(self, stream: str) -> bool:
        """Whether ``stream`` committed here already."""
        return stream in self._runtimes

    def streams(self) -> list[str]:
        """The streams that committed here (and were not forgotten)."""
        with self._cv:
            return list(self._runtimes)

    def mark(self, runtime) -> None:
        """A stream committed a clip: evaluate its rules soon (on the evaluation thread)."""
        with self._cv:
            self._marked[runtime.name] = self._runtimes[runtime.name] = runtime
            self._cv.notify_all()  # all: wait_idle waits on this condition too

    def wait_idle(self, timeout: float) -> bool:
        """Until every commit marked so far is evaluated; False if that takes longer than ``timeout``."""
        with self._cv:
            return self._cv.wait_for(lambda: not (self._marked or self._busy), timeout)

    def forget(self, stream: str) -> None:
        """A stream removed from the runtime: no more ticks for it."""
        with self._cv:
            self._runtimes.pop(stream, None)
            self._marked.pop(stream, None)
            self._watches.pop(stream, None)

    def close(self, timeout: float) -> None:
        """Evaluate what is marked, then end the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
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
            self.on_error(rt.name, err)

    def _waiting(self) -> bool:
        """Whether any stream's rules hold a decision that waits for time to pass (RuleEngine.next_due), or
        an item alert waits to be cleared."""
        return any(getattr(self._engines.get(name), "next_due", lambda: None)() is not None
                   or len(self._watches.get(name, ())) for name in self._runtimes)

    def tick(self, runtime) -> list[Alert]:
        """Make the decisions of ``runtime``'s rules that are due by the stream's time now, between
        commits (no new events: a decision that waits needs only the time and the till's scans)."""
        engine = self._engines.get(runtime.name)
        due = getattr(engine, "next_due", lambda: None)() if engine is not None else None
        if due is None and not len(self._watches.get(runtime.name, ())):
            return []
        now = stream_now(runtime)
        if now is None:
            return []
        out = [] if due is None or now < due else self._raise(
            engine.evaluate(self._transactions(runtime, now), now, self._scans(runtime, now)), runtime, now)
        self._clear(runtime, now)
        return out

    def _engine(self, runtime):
        if runtime.name not in self._engines:
            factory = self.rule_engine
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
        first, now = evaluable(runtime.stream)
        if now is None:
            return []
        last = self._evaluated_to.get(runtime.name)
        if last is not None and now <= last:  # nothing new since (a memory commit with no new frame)
            return []
        if last is None:
            self._resume(runtime, now)
        start = now - FIRST_LOOKBACK_S if last is None else last - OVERLAP_S
        window = (max(first, start), now)
        if window[1] <= window[0]:
            return []
        events = self.events(runtime, window)
        self._evaluated_to[runtime.name] = now
        self.evaluations += 1
        if self.mqtt is not None and self.settings.mqtt.publish_events:
            self._publish_events(runtime.name, events)
        out = self._raise(engine.evaluate(events + self._transactions(runtime, now), now, self._scans(runtime, now),
                                          entering_events(runtime)), runtime, now)
        self._clear(runtime, now)
        self.note = None
        return out

    def _resume(self, runtime, now: float) -> None:
        """A stream's first evaluation: after a restart that restored its item state, watch again its
        stored item alerts not cleared yet (ClearWatch.resume)."""
        restored = getattr(getattr(runtime.stream, "items", None), "restored_ids", 0)
        if restored and self.stored is not None and self.clear_alert is not None:
            self._watch(runtime.name).resume(self.stored(runtime.name), restored, now)

    def _clear(self, runtime, now: float) -> None:
        """Clear the stream's watched item alerts whose item was since scanned or put back."""
        watch = self._watches.get(runtime.name)
        if watch is None or not len(watch):  # only what a clear_alert / clear_nudge was given for is watched
            return
        for alert_id, cleared, nudge in watch.check(getattr(runtime.stream, "items", None), now):
            if nudge is None:
                self.clear_alert(alert_id, cleared)
            else:
                self.clear_nudge(nudge, cleared)

    def _scans(self, runtime, until: float) -> list:
        return self.till.scans_for(runtime, until) if self.till is not None else []

    def _transactions(self, runtime, until: float) -> list:
        return self.till.transactions_for(runtime, until) if self.till is not None else []

    def _raise(self, drafts: list[dict], runtime, stream_time: float) -> list[Alert]:
        out = []
        for draft in drafts:
            if draft.get("early"):  # a bag under way: a nudge to the kiosk's screen, no alert
                if self.nudge_early is not None:
                    nudged = self.nudge_early(draft, stream=runtime.name, stream_time=stream_time,
                                              wall_origin=getattr(runtime, "wall_origin", None))
                    if nudged is not None and self.clear_nudge is not None:
                        self._watch(runtime.name).watch(nudged.id, nudged.rule, nudged.evidence, stream_time, nudged)
                continue
            alert, new = self.raise_alert(draft, stream=runtime.name, stream_time=stream_time,
                                          wall_origin=getattr(runtime, "wall_origin", None),
                                          memory_began=getattr(runtime, "memory_began", None),
                                          ring=getattr(runtime.stream, "evidence", None))
            if new:
                out.append(alert)
                if self.clear_alert is not None:
                    self._watch(runtime.name).watch(alert.id, alert.rule, alert.evidence, stream_time)
        return out

    def _watch(self, stream: str) -> ClearWatch:
        if stream not in self._watches:
            self._watches[stream] = ClearWatch(self.settings.clear_within_s)
        return self._watches[stream]

    def _publish_events(self, stream: str, events: list) -> None:
        seen = self._seen_events.setdefault(stream, set())
        fresh = []
        for e in events:
            d = e.to_dict() if hasattr(e, "to_dict") else dict(e)
            key = (d.get("activity"), d.get("product"), round(float(d.get("start", 0)), 1))
            if key not in seen:
                seen.add(key)
                fresh.append({**d, "site": self.settings.site, "stream": stream})
        if len(seen) > 10_000:  # the overlap needs only the recent ones
            seen.clear()
        self.mqtt.publish_events(stream, fresh)
