"""An item alert cleared by what its item did next (edge_runtime/alerts/cleared.py): taken out of the bag and
scanned, or put back in the basket, within alerts.clear_within_s; stored with ``cleared``, queued again for
the sinks, nudged again; another item of the product scanned from the counter clears nothing; after a
restart that restored the stream's item state, the alerts stored before it are watched again."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.alerts.cleared import ClearWatch
from edge_runtime.alerts.nudge import nudge_body
from edge_runtime.alerts.outbox import Outbox
from edge_runtime.alerts.record import Cleared, from_draft
from edge_runtime.alerts.service import AlertService
from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.items.detections import Detections
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.zones import Zones

FPS = 5.0
# basket, counter, scanner and bag side by side (normalised image coordinates)
LANE = {"basket": [[0, 0.3], [0.3, 0.3], [0.3, 0.9], [0, 0.9]], "counter": [[0.3, 0.3], [0.5, 0.3], [0.5, 0.9], [0.3, 0.9]],
        "scanner": [[0.5, 0.3], [0.65, 0.3], [0.65, 0.9], [0.5, 0.9]], "bag": [[0.65, 0.3], [1, 0.3], [1, 0.9], [0.65, 0.9]]}
NONE = (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))


def _at(k: int, x: float, size: float, held: float) -> Detections:
    """Frame k's one detection: a soda can (class 3), a square of ``size`` at (x, 0.5)."""
    return Detections(k / FPS, np.array([[x, 0.5, x + size, 0.5 + size]], np.float32), np.array([0.8]),
                      np.array([3]), np.full(1, held, np.float32))


def _bagged() -> list[Detections]:
    """At rest on the counter, carried into the bag and let go there: bagged as it settles (k 0-30)."""
    frames = [_at(k, 0.35, 0.1, 0.0) for k in range(5)]
    frames += [_at(k, 0.35 + 0.045 * (k - 5), 0.12, 1.0) for k in range(5, 13)]
    return frames + [_at(k, 0.72, 0.08, 1.0) for k in range(13, 31)]


def _run(frames, reads=()) -> tuple[ItemState, list]:
    state = ItemState(Zones.from_dict(LANE), bundle_id="b")
    state.add_till_reads([(t, 3) for t in reads])   # matched as their frames come
    events = []
    for d in frames:
        events += state.update(d)
    return state, events


def _gone(k0: int, k1: int) -> list[Detections]:
    return [Detections(k / FPS, *NONE) for k in range(k0, k1)]


def _out_and_scanned() -> list[Detections]:
    """After the bag: lost there, then lifted out of the bag (a new track), over the scanner (k 50-57) and back."""
    frames = _bagged() + _gone(31, 45)
    frames += [_at(k, 0.75 - 0.025 * (k - 45), 0.12, 1.0) for k in range(45, 50)]
    frames += [_at(k, 0.56, 0.12, 1.0) for k in range(50, 58)]
    return frames + [_at(k, 0.56 + 0.04 * (k - 58), 0.12, 1.0) for k in range(58, 64)]


def test_an_item_taken_out_of_the_bag_and_scanned_is_paid_after_its_alert():
    frames = _out_and_scanned()
    state, events = _run(frames, reads=[10.8])
    bag = next(e for e in events if e.activity == "bag")
    since = bag.end + 0.4                       # the alert, raised as the bag was decided
    t, why, track = state.fixed_after(bag.track_id, bag.start, since)
    assert (t, why) == (pytest.approx(10.8), "scanned") and track != bag.track_id
    assert state.fixed_after(bag.track_id, bag.start, 11.0) is None   # an alert raised after that read
    unread, _ = _run(frames)
    assert unread.fixed_after(bag.track_id, bag.start, since) is None


def test_another_item_of_the_product_scanned_from_the_counter_pays_nothing_after():
    """A second can brought from the counter (not out of the bag) and scanned: the alert stands."""
    frames = _bagged() + _gone(31, 45)
    frames += [_at(k, 0.35, 0.1, 0.0) for k in range(45, 50)]                         # another one at rest
    frames += [_at(k, 0.35 + 0.05 * (k - 50), 0.12, 1.0) for k in range(50, 54)]
    frames += [_at(k, 0.56, 0.12, 1.0) for k in range(54, 62)]
    state, events = _run(frames, reads=[11.6])
    bag = next(e for e in events if e.activity == "bag")
    assert state.scanned and bag.track_id not in state.scanned
    assert state.fixed_after(bag.track_id, bag.start, bag.end + 0.4) is None


def test_an_item_held_over_the_bag_then_put_back_in_the_basket_is_put_back_after_its_alert():
    frames = _bagged()
    frames += [_at(k, 0.72 - 0.045 * (k - 31), 0.12, 1.0) for k in range(31, 45)]        # carried back
    frames += [_at(k, 0.1, 0.1, 0.0) for k in range(45, 60)]                              # set down in the basket
    state, events = _run(frames)
    bag = next(e for e in events if e.activity == "bag")
    assert [e.activity for e in events if e.track_id == bag.track_id][-1] == "put_back"
    t, why, track = state.fixed_after(bag.track_id, bag.start, bag.end + 0.4)
    assert why == "put_back" and track == bag.track_id and t > bag.end


def test_the_watch_lets_an_alert_go_after_clear_within_s_and_ignores_memory_alerts():
    def read_at(t, track=9):   # an item state whose item was read at stream time t
        return SimpleNamespace(fixed_after=lambda tr, start, since: (t, "scanned", track) if t > since else None)

    paid = read_at(92.0, 4)
    w = ClearWatch(60.0)
    w.watch("a", "bagged_without_scan", [{"activity": "bag", "start": 1.0, "item": 4}], 2.0)
    w.watch("m", "bagged_without_scan", [{"activity": "bag", "start": 1.0}], 2.0)         # read from the memory
    w.watch("l", "left_in_basket", [{"activity": "in_basket", "start": 1.0, "item": 5}], 2.0)
    assert len(w) == 1 and w.check(paid, 30.0) == [] and len(w) == 1   # paid 90 s after: too late
    assert w.check(paid, 62.5) == [] and len(w) == 0
    w.watch("b", "pass_around", [{"activity": "pass_around", "start": 1.0, "item": 4}], 2.0)
    assert w.check(read_at(3.0), 3.2) == []     # read 1 s after the alert: another item's, not an answer to it
    assert w.check(read_at(10.6), 11.0) == [("b", {"why": "scanned", "t": 10.6, "after_s": 8.6, "item": 9}, None)]
    # an early nudge (a bag under way) is watched until its alert, of the same id, takes over from it
    bag = [{"activity": "bag", "start": 1.0, "item": 4}]
    w.watch("e", "bagged_without_scan", bag, 2.0, nudge="the early nudge")
    assert [(i, n) for i, _, n in w.check(read_at(10.6), 11.0)] == [("e", "the early nudge")]
    w.watch("e", "bagged_without_scan", bag, 2.0, nudge="the early nudge")
    w.watch("e", "bagged_without_scan", bag, 3.0)
    w.watch("e", "bagged_without_scan", bag, 4.0, nudge="another early nudge")   # never over an alert
    assert [(i, n) for i, _, n in w.check(read_at(10.6), 11.0)] == [("e", None)]
    off = ClearWatch(0.0)
    off.watch("a", "bagged_without_scan", [{"activity": "bag", "start": 1.0, "item": 4}], 2.0)
    assert len(off) == 0


def _draft(item: int = 4) -> dict:
    ev = {"activity": "bag", "product": "soda_can", "start": 1.0, "end": 3.0, "item": item}
    return {"rule": "bagged_without_scan", "product": "soda_can", "start": 1.0, "end": 3.0, "confidence": 0.8,
            "box": None, "evidence": [ev]}


def test_a_cleared_alert_is_queued_again_with_cleared_set_once(tmp_path):
    box = Outbox(tmp_path, sinks=["mqtt"])
    a = from_draft(_draft(), site="shop", stream="lane1", stream_time=3.4)
    box.add(a)
    box.delivered("mqtt", [box.due("mqtt")[0][0]])
    assert box.due("mqtt") == []
    c = Cleared(why="scanned", t=12.0, after_s=8.6, item=9, at=1000.0)
    assert box.clear(a.id, c).cleared == c
    again = box.due("mqtt")
    assert len(again) == 1 and again[0][1].id == a.id and again[0][1].cleared == c
    assert box.clear(a.id, c) is None and box.clear("nope", c) is None and len(box.due("mqtt")) == 1
    assert Outbox(tmp_path, sinks=["mqtt"]).get(a.id).cleared == c          # kept across a restart
    held = from_draft({**_draft(5), "product": "milk"}, site="shop", stream="lane1", stream_time=3.4)
    held = held.model_copy(update={"held": True})
    box.add(held, send=False)
    box.clear(held.id, c)
    assert [x.id for _, x in box.due("mqtt")] == [a.id]                       # a held alert stays unsent
    body = json.loads(nudge_body(box.get(a.id)))
    assert body["cleared"]["why"] == "scanned" and json.loads(nudge_body(held))["cleared"] is None


def _lane_service(state_dir, sent: list | None = None, registry=None) -> AlertService:
    """An alert service with the till's reads and the unpaid-bag rule, its evaluations run by the test;
    what it sends to the kiosk's screen goes to ``sent`` as (id, early, cleared why)."""
    from prometheus_client import CollectorRegistry

    svc = AlertService(AlertSettings.model_validate({"site": "shop", "scans": "pos",
                                                     "rules": {"bagged_without_scan": {}}}),
                       state_dir, registry=registry or CollectorRegistry(), evaluate=False)
    sink = [] if sent is None else sent
    svc.nudger = SimpleNamespace(send=lambda a, early=False: sink.append((a.id, early, a.cleared and a.cleared.why)),
                                 close=lambda timeout=1.0: None)
    return svc


def _lane(items: ItemState) -> SimpleNamespace:
    products = [f"class {i}" for i in range(3)] + ["soda_can"]
    stream = SimpleNamespace(items=items, last_input=None, coverage={"start": 0.0, "end": None}, evidence=None)
    engine = SimpleNamespace(products=products, events=object(), event_activities=list(items.activities))
    return SimpleNamespace(name="lane1", engine=engine, stream=stream, stream_now=None)


def _feed(svc: AlertService, rt, frames, read_at: float | None = None) -> None:
    """The frames into the lane's item state, the alert thread's evaluation after every second one."""
    for k, d in enumerate(frames):
        if read_at is not None and d.t == round(read_at + 0.2, 1):   # the till's read, POSTed a moment after it
            svc.add_pos_scans("lane1", [("soda_can", read_at)], d.t, runtime=rt)
        rt.stream.items.update(d)
        rt.stream.last_input = rt.stream_now = d.t
        if k % 2 == 1:
            svc.evaluator.evaluate(rt)


def test_the_service_clears_an_item_alert_when_its_item_is_scanned_after_it(tmp_path):
    """The rules over a stream's item events as the alert thread runs them: the unpaid bag alerts, and
    once the item is taken out of the bag and read by the till the alert is cleared and counted."""
    from prometheus_client import CollectorRegistry

    reg, sent = CollectorRegistry(), []   # what goes to the kiosk's screen: (id, early, cleared why)
    svc = _lane_service(tmp_path / "state", sent, reg)
    try:
        _feed(svc, _lane(ItemState(Zones.from_dict(LANE), bundle_id="b")), _out_and_scanned(), read_at=10.8)
        [(_, alert)] = svc.list()
        assert alert.rule == "bagged_without_scan" and alert.cleared is not None
        assert alert.cleared.why == "scanned" and alert.cleared.t == pytest.approx(10.8)
        assert reg.get_sample_value("lvm_alerts_cleared_total", {"stream": "lane1", "rule": "bagged_without_scan",
                                                                 "why": "scanned"}) == 1.0
        # the screen: the early nudge as the can went in, the alert's, and the alert's again once cleared
        assert sent == [(alert.id, True, None), (alert.id, False, None), (alert.id, False, "scanned")]
        early = from_draft(_draft(), site="shop", stream="lane1", stream_time=3.4)
        svc.clear_nudge(early, {"why": "put_back", "t": 9.0, "after_s": 5.6, "item": 4})   # no alert came
        assert sent[-1] == (early.id, True, "put_back") and svc.list() == [(1, alert)]
    finally:
        svc.close()


@pytest.mark.parametrize("restored", [True, False])
def test_an_alert_raised_before_a_restart_is_cleared_after_it_when_the_stream_was_restored(tmp_path, restored):
    """The runtime stops after the alert (its item state snapshotted) and starts again: the item, taken out
    of the bag and read by the till after the restart, clears the stored alert. A stream that starts afresh
    (no snapshot: its new tracks may take the old ids) watches nothing from before."""
    frames = _out_and_scanned()
    svc = _lane_service(tmp_path / "state")
    items = ItemState(Zones.from_dict(LANE), bundle_id="b")
    try:
        _feed(svc, _lane(items), frames[:40])
        [(_, alert)] = svc.list()
        assert alert.cleared is None and alert.stream_time < 8.0
    finally:
        svc.close()
    sent = []
    svc = _lane_service(tmp_path / "state", sent)
    again = ItemState(Zones.from_dict(LANE), bundle_id="b")
    if restored:
        again.load_state_dict(items.state_dict(), "b")
    try:
        _feed(svc, _lane(again), frames[40:], read_at=10.8)
        [(_, after)] = svc.list()
        if restored:
            assert after.cleared is not None and after.cleared.why == "scanned"
            assert sent[-1] == (alert.id, False, "scanned")
        else:
            assert after.cleared is None and not sent
    finally:
        svc.close()


def test_after_a_restart_only_recent_uncleared_alerts_on_restored_tracks_are_watched_again():
    def stored(i, item, t, cleared=None, rule="bagged_without_scan"):
        ev = [{"activity": "bag", "start": t - 2.0, "item": item}]
        return SimpleNamespace(id=i, rule=rule, evidence=ev, stream_time=t, cleared=cleared)

    w = ClearWatch(60.0)
    alerts = [stored("ok", 3, 90.0), stored("new track", 7, 95.0), stored("old", 2, 20.0),
              stored("done", 4, 92.0, cleared="scanned"), stored("later", 5, 140.0),
              stored("basket", 1, 90.0, rule="left_in_basket"), stored("ok2", 6, 99.0)]
    assert w.resume(alerts, 7, 100.0) == 2 and len(w) == 2
    assert w.resume(alerts, 7, 100.0) == 0          # watched already
    assert ClearWatch(0.0).resume(alerts, 7, 100.0) == 0


def test_a_subscriber_shows_an_alert_again_once_when_it_is_cleared():
    from edge_runtime.alerts.subscriber import Deduper, alert_line

    a = {"id": "x1", "site": "s", "stream": "lane1", "rule": "bagged_without_scan", "product": "soda_can",
         "start": 1.0, "end": 3.0, "confidence": 0.8}
    c = {**a, "cleared": {"why": "put_back", "t": 18.0, "after_s": 14.6, "item": 4, "at": 1000.0}}
    d = Deduper()
    assert [d.first(x) for x in (a, a, c, c)] == [True, False, True, False] and d.duplicates == 2
    assert alert_line(c).endswith("[cleared: put back 15 s later]") and "cleared" not in alert_line(a)


def test_an_item_taken_out_of_the_bag_and_put_back_in_the_basket_is_put_back_after_its_alert():
    frames = _bagged() + _gone(31, 45)
    frames += [_at(k, 0.75 - 0.05 * (k - 45), 0.12, 1.0) for k in range(45, 58)]        # out of the bag, carried back
    frames += [_at(k, 0.1, 0.1, 0.0) for k in range(58, 72)]                              # set down in the basket
    state, events = _run(frames)
    bag = next(e for e in events if e.activity == "bag")
    t, why, track = state.fixed_after(bag.track_id, bag.start, bag.end + 0.4)
    assert why == "put_back" and track != bag.track_id and t > 11.0


def test_after_a_reset_no_new_track_takes_an_old_ones_id():
    """A stream reset (a new session) within an alert's watch: the new tracks' ids go on from the old ones',
    so the alert's item is never a new track scanned after the reset."""
    state, events = _run(_bagged())
    bag = next(e for e in events if e.activity == "bag")
    state.reset()
    state.add_till_reads([(10.8, 3)])
    later = [e for d in _out_and_scanned() for e in state.update(d)]
    assert later and min(e.track_id for e in later) > bag.track_id
    assert state.fixed_after(bag.track_id, bag.start, bag.end + 0.4) is None
