"""Items left in the basket: the item state's basket stays (edge_runtime/items/basket.py), the
``left_in_basket`` rule on small hand-built events, the till's transactions (store, POST
/v1/streams/{stream}/till, the demo's own), and that the rule needed only its module."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.alerts.rules import KEEP_S, RULES, RuleEngine
from edge_runtime.alerts.till_transactions import TillError, TillTransactions, transaction_event
from edge_runtime.items.detections import Detections
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.zones import Zones
from edge_runtime.query.events import Event
from fakes import one_line_error as _error

REPO = Path(__file__).resolve().parent.parent
ZONES = Zones.from_dict({"basket": [[0.0, 0.6], [0.4, 0.6], [0.4, 1.0], [0.0, 1.0]],
                         "scanner": [[0.45, 0.6], [0.55, 0.6], [0.55, 0.8], [0.45, 0.8]],
                         "bag": [[0.7, 0.5], [1.0, 0.5], [1.0, 1.0], [0.7, 1.0]]})
LEFT = (0.05, 0.7, 0.12, 0.78)        # a box at rest in the basket
TAKEN = (0.25, 0.7, 0.32, 0.78)       # another in the basket, picked up at 4 s
STAYS = ("in_basket", "carried_out")


def frame(t: float, boxes: list[tuple], held: list[float]) -> Detections:
    return Detections(t, np.asarray(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32),
                      np.arange(len(boxes), dtype=np.int64), np.asarray(held, np.float32))


def test_the_item_state_keeps_each_items_stay_in_the_basket_until_it_is_taken_out():
    state = ItemState(ZONES, bundle_id="b")
    for k in range(40):    # 8 s at 5 fps; the second item is lifted out of the basket from 4 s on
        t = k / 5
        up = 0.02 * max(0, k - 20)
        taken = (TAKEN[0], TAKEN[1] - up, TAKEN[2], TAKEN[3] - up)
        state.update(frame(t, [LEFT, taken], [0.0, 0.9 if k >= 20 else 0.0]))
    stays = state.basket_stays((0.0, 10.0))
    assert [(s.class_id, s.start, s.activity) for s in stays] == [(0, 0.0, "in_basket")]
    assert stays[0].last == pytest.approx(7.8)
    # a snapshot keeps it; one from before the basket watch (no such arrays) starts it empty
    sd = state.state_dict()
    again = ItemState(ZONES, bundle_id="b")
    again.load_state_dict(sd, "b")
    assert [(s.track_id, s.start, s.last) for s in again.basket_stays((0.0, 10.0))] == \
        [(stays[0].track_id, 0.0, stays[0].last)]
    old = ItemState(ZONES, bundle_id="b")
    old.load_state_dict({k: v for k, v in sd.items() if "basket" not in k}, "b")
    assert old.basket_stays((0.0, 10.0)) == []
    narrow = {k: (v[:, :11] if k.endswith("basket") else v) for k, v in sd.items()}   # before stays named their item
    old.load_state_dict(narrow, "b")
    assert [(s.item, s.start) for s in old.basket_stays((0.0, 10.0))] == [(stays[0].track_id, 0.0)]
    assert 0 < state.nbytes() <= state.max_nbytes()
    # the basket goes out of view: its track ends there; once no track has come back where it lay for
    # REJOIN_S, the item was carried out with it
    for k in range(40, 60):
        state.update(frame(k / 5, [], []))
    assert [s.activity for s in state.basket_stays((0.0, 20.0))] == ["in_basket"]
    for k in range(60, 90):
        state.update(frame(k / 5, [], []))
    assert [s.activity for s in state.basket_stays((0.0, 20.0))] == ["carried_out"]


def test_an_item_the_head_loses_in_the_basket_keeps_one_stay_until_it_is_lifted_out():
    """Missed for longer than the tracker coasts, a resting item comes back as a new track: its stay goes
    on (same item, same start), so it alerts once; held in place it stays, lifted it is taken out."""
    state = ItemState(ZONES, bundle_id="b")
    t = 0.0
    for seen in (25, 15, 25):                  # seen 5 s, missed 3 s (its track ends), seen 5 s again
        for k in range(seen):
            state.update(frame(t, [LEFT], [0.0]) if seen != 15 else frame(t, [], []))
            t += 0.2
    stays = state.basket_stays((0.0, t))
    assert [(s.item, s.start, s.activity) for s in stays] == [(stays[0].item, 0.0, "in_basket")]
    assert stays[0].last == pytest.approx(t - 0.2) and stays[0].track_id != stays[0].item
    sd = state.state_dict()
    for k in range(15):                        # missed again; a hand over it where it lies (reaching for
        state.update(frame(t, [], []))         # another item) leaves it there; lifted, it is taken out
        t += 0.2
    assert len(state.basket_stays((0.0, t))) == 1
    for k in range(3):
        up = 0.04 * k
        state.update(frame(t, [(LEFT[0], LEFT[1] - up, LEFT[2], LEFT[3] - up)], [0.9]))
        t += 0.2
        assert len(state.basket_stays((0.0, t))) == (1 if k < 2 else 0)
    again = ItemState(ZONES, bundle_id="b")    # the snapshot keeps which item the stay is
    again.load_state_dict(sd, "b")
    assert [(s.item, s.start) for s in again.basket_stays((0.0, t))] == [(stays[0].item, 0.0)]


def test_an_item_lost_while_another_is_still_seen_in_the_basket_was_taken_out_not_carried_out():
    """The basket leaves with all its items: a stay lost while another item is still seen at rest there
    was lifted out unseen, so it never reads as carried out (no alert without a till)."""
    state = ItemState(ZONES, bundle_id="b")
    for k in range(100):   # both at rest; TAKEN's item vanishes at 4 s (a hand hid its lift), LEFT stays 20 s
        boxes = [LEFT, TAKEN] if k < 20 else [LEFT]
        state.update(frame(k / 5, boxes, [0.0] * len(boxes)))
    assert [(s.class_id, s.activity) for s in state.basket_stays((0.0, 20.0))] == [(0, "in_basket")]
    for k in range(100, 160):   # the basket leaves: LEFT's item goes out with it
        state.update(frame(k / 5, [], []))
    assert [(s.class_id, s.activity) for s in state.basket_stays((0.0, 40.0))] == [(0, "carried_out")]


def stay(item: int, product: str, start: float, end: float, carried: bool = False, conf: float = 0.9) -> Event:
    return Event(STAYS[carried], -1, product, start, end, conf, (0.1, 0.7, 0.2, 0.8), ("items",), item=item, paid=False)


def engine(**th) -> RuleEngine:
    return RuleEngine({"left_in_basket": th}, ["bag", "scan", *STAYS])


def test_at_the_tills_end_every_item_still_in_the_basket_alerts_once():
    e = engine()
    basket = [stay(1, "apple", 10, 60), stay(2, "bread", 10, 60), stay(3, "milk_carton", 10, 20)]  # 3 taken out at 20 s
    assert e.evaluate(basket, now=60.0) == []                         # no transaction has ended yet
    tx = transaction_event(8.0, 58.0)
    got = e.evaluate(basket + [tx], now=61.0)
    assert [(d["rule"], d["product"]) for d in got] == [("left_in_basket", "apple"), ("left_in_basket", "bread")]
    assert got[0]["evidence"][1]["activity"] == "transaction"
    assert e.evaluate(basket + [stay(1, "apple", 10, 64, carried=True), tx], now=65.0) == []  # read again: nothing new
    e.evaluate([], now=65.0 + 2 * KEEP_S)
    assert e.state_size() == 0


def test_with_a_till_a_stay_is_judged_at_an_end_it_reaches_only():
    e = engine()
    tx = transaction_event(100.0, 150.0)
    # seen last 10 s before the end (min_stay_s passed, but gone before it), a stay of a moment, a weak one,
    # and one begun after the end (the next customer's basket)
    events = [stay(1, "apple", 100, 140), stay(2, "bread", 145, 149), stay(3, "soda_can", 100, 151, conf=0.1),
              stay(4, "cheese", 152, 170), tx]
    assert e.evaluate(events, now=170.0) == []
    assert e.evaluate([stay(1, "apple", 100, 140, carried=True)], now=171.0) == []   # the till decides, not leaving
    # an end the frames have not reached yet waits for them
    late = engine()
    assert late.evaluate([stay(1, "apple", 100, 150), transaction_event(100.0, 152.0)], now=151.0) == []
    assert [d["product"] for d in late.evaluate([stay(1, "apple", 100, 153)], now=153.0)] == ["apple"]


def test_without_a_till_an_item_carried_out_in_the_basket_alerts():
    e = engine()
    assert e.evaluate([stay(1, "apple", 10, 60)], now=60.0) == []
    got = e.evaluate([stay(1, "apple", 10, 62, carried=True), stay(2, "bread", 50, 53, carried=True)], now=64.0)
    assert [(d["product"], d["start"], d["end"]) for d in got] == [("apple", 10.0, 62.0)]
    assert e.evaluate([stay(1, "apple", 10, 62, carried=True)], now=65.0) == []
    assert [d["product"] for d in engine(min_stay_s=2).evaluate([stay(2, "bread", 50, 53, carried=True)], 54.0)] == ["bread"]


def test_the_rule_needed_only_its_module():
    """The config, the engine, the status and the docs' table take it from the registry: no other module
    of the runtime names it."""
    from edge_runtime.alerts.rules import thresholds_table
    from edge_runtime.alerts.settings import AlertSettings

    spec = RULES["left_in_basket"]
    assert spec.__module__ == "edge_runtime.alerts.rules.left_in_basket"
    # nothing else reads it by name (the generator names its behaviour so: its ground truth)
    named = [p.relative_to(REPO).as_posix() for p in (REPO / "edge_runtime").rglob("*.py")
             if any(q + "left_in_basket" + q in p.read_text() for q in "'\"") and p.parent.name != "checkout"]
    assert named == ["edge_runtime/alerts/rules/left_in_basket.py"], named
    s = AlertSettings.model_validate({"scans": "pos", "rules": {"left_in_basket": {"seen_s": 5}}})
    s.check_rules(["bag", "scan", *STAYS], ["lane1"])
    with pytest.raises(ValueError, match="needs the activity in_basket") as err:   # a bundle without item tracks
        s.check_rules(["bag", "scan"], ["lane1"])
    assert "\n" not in str(err.value)
    assert "| `left_in_basket` | `seen_s` | 3 | 0–60 |" in thresholds_table()
    assert thresholds_table() in (REPO / "docs" / "alerts.md").read_text()


def test_the_transaction_store_refuses_an_end_without_a_start_and_keeps_what_it_has(tmp_path):
    tx = TillTransactions(tmp_path)
    assert tx.add("lane1", [("end", 50.0), ("start", 10.0)], now=60.0) == {"started": 1, "ended": 1, "replaced": 0}
    assert tx.add("lane1", [("start", 10.0), ("end", 50.0)], now=60.0) == {"started": 0, "ended": 0, "replaced": 0}
    with pytest.raises(TillError, match="no transaction started") as err:
        tx.add("lane1", [("start", 70.0), ("end", 65.0)], now=80.0)   # the new start comes after this end
    assert "\n" not in str(err.value)
    assert tx.listing("lane1") == [(10.0, 50.0)]                      # the refused call stored nothing
    tx.add("lane1", [("start", 70.0)], now=80.0)
    assert tx.add("lane1", [("start", 90.0)], now=95.0)["replaced"] == 1   # its end was lost
    tx.close()
    tx = TillTransactions(tmp_path)                                    # a restart on the same state dir
    assert [(e.activity, e.start, e.end) for e in tx.recent("lane1", 0.0)] == [("transaction", 10.0, 50.0)]
    tx.add("lane1", [("end", 100.0)], now=100.0 + KEEP_S - 20)
    assert tx.listing("lane1") == [(90.0, 100.0)]                      # older than KEEP_S: gone
    tx.close()


def test_post_till_takes_transactions_beside_reads_and_refuses_bad_input_in_one_line(lane_app, tmp_path):
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    client, hub, rt = lane_app
    url = f"/v1/streams/{rt.name}/till"
    body = {"transactions": [{"mark": "start", "stream_time": 3.0}]}
    assert "does not take the till's scans" in _error(client.post(url, json=body), 409)
    svc = hub.alerts = AlertService(AlertSettings.model_validate({"scans": "pos", "rules": {"left_in_basket": {}}}),
                                    tmp_path / "state", registry=hub.metrics.registry, evaluate=False)
    try:
        r = client.post(url, json={"transactions": [{"mark": "start", "stream_time": 3.0},
                                                    {"mark": "end", "stream_time": 40.0}],
                                   "scans": [{"product": "milk_carton", "stream_time": 12.5}]})
        assert r.status_code == 202, r.text
        assert r.json()["transactions"] == {"received": 2, "started": 1, "ended": 1, "replaced": 0}
        assert r.json()["scans"]["new"] == 1
        assert client.post(f"/v1/streams/{rt.name}/scans",                # the reads endpoint goes on as before
                           json={"scans": [{"product": "apple", "stream_time": 13.0}]}).status_code == 202
        assert client.post(url, json={"transactions": [{"mark": "end", "stream_time": 40.0}]}).status_code == 202  # a retry
        held = {"stream": rt.name, "transactions": [{"start": 3.0, "end": 40.0}]}
        assert client.get(url).json() == held
        # an end with no transaction open: refused whole, the reads beside it too; nothing stored is lost
        said = _error(client.post(url, json={"transactions": [{"mark": "end", "stream_time": 50.0}],
                                             "scans": [{"product": "bread", "stream_time": 49.0}]}), 409)
        assert "no transaction started" in said
        assert client.get(url).json() == held and svc.pos.count(rt.name) == 2
        assert "no wall clock" in _error(client.post(url, json={"transactions": [{"mark": "start", "time": 1.8e9}]}), 422)
        for bad in ({}, {"transactions": []}, {"transactions": [{"mark": "pause", "stream_time": 1}]},
                    {"transactions": [{"mark": "start"}]}, {"transactions": [{"mark": "start", "stream_time": "1"}]},
                    {"transactions": [{"mark": "start", "stream_time": 1, "time": 1.8e9}]},
                    {"transactions": [{"mark": "start", "stream_time": -1}]}, {"transaction": "start"},
                    {"scans": [{"product": "a"}]}):
            _error(client.post(url, json=bad), 422)
        assert client.get(url).json() == held
        assert "no stream" in _error(client.post("/v1/streams/nope/till", json=body), 404).lower()
    finally:
        svc.close()
        hub.alerts = None


def test_two_items_left_in_one_basket_are_two_alerts_one_raised_again_is_one(tmp_path):
    from edge_runtime.alerts.rules import draft
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    svc = AlertService(AlertSettings.model_validate({"rules": {"left_in_basket": {}}}), tmp_path, evaluate=False)
    try:
        a, b = stay(1, "apple", 10, 60), stay(2, "apple", 11, 60)
        tx = transaction_event(8.0, 58.0)
        assert svc.raise_alert(draft("left_in_basket", a, [a, tx]), stream="lane1")[1]
        assert svc.raise_alert(draft("left_in_basket", b, [b, tx]), stream="lane1")[1]
        assert not svc.raise_alert(draft("left_in_basket", a, [a, tx]), stream="lane1")[1]
        assert len(svc.list(stream="lane1")) == 2
    finally:
        svc.close()


def test_the_demo_till_ends_each_transaction_while_its_basket_is_still_there():
    from edge_runtime.checkout import CheckoutVideo
    from edge_runtime.checkout.shrink import till_transactions

    ann = CheckoutVideo(seed=5, duration_s=600.0, shrink="0,0,0.5").annotations()
    marks = till_transactions(ann)
    sessions = {s["session"]: s for s in ann["sessions"]}
    ends = [t for k, t in marks if k == "end"]
    assert [k for k, _ in marks][:2] == ["start", "end"] and len(ends) == sum(s["end"] < 600.0 for s in sessions.values())
    left = [i for i in ann["instances"] if i["shrink"] == "left_in_basket"]
    assert left
    for item in left:   # in view at its transaction's end
        assert any(item["appear"] <= t < item["vanish"] for t in ends), item
