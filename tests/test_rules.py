"""Standing alert rules (edge_runtime/alerts/rules/) on hand-built Event lists: the records
'what happened' gives them at every commit; a rule written here, registered, picked up by the engine,
the config checks and the status; the registry's table in docs/alerts.md. Also
tools/accuracy/alerts_eval.py: its oracle, --set, and --save-events / --events-from (a replay gives the
streamed run's results)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.alerts.rules import KEEP_S, RULES, Rule, RuleEngine, draft, register_rule, thresholds_table
from edge_runtime.checkout import ACTIVITIES, BASE_ACTIVITIES
from edge_runtime.query.events import Event

ALL = list(ACTIVITIES)
REPO = Path(__file__).resolve().parent.parent


def ev(activity: str, product: str, start: float, end: float, confidence: float = 0.9, box=(0.1, 0.2, 0.3, 0.4)) -> Event:
    return Event(activity, ALL.index(activity) if activity in ALL else 99, product, start, end, confidence, box, ("memory",))


def engine(**rules) -> RuleEngine:
    return RuleEngine(rules or {"bagged_without_scan": {}, "pass_around": {}}, ALL)


def test_rules_name_their_defaults_and_say_what_they_do():
    assert {"bagged_without_scan", "pass_around"} <= set(RULES)
    for spec in RULES.values():
        assert spec.description and "\n" not in spec.description and spec.thresholds
    with pytest.raises(TypeError):
        RULES["pass_around"].thresholds["min_confidence"] = 0.1   # the defaults cannot be changed by a caller


class TwoBagsNoScan(Rule):
    """A rule written here, as a module of edge_runtime/alerts/rules/ would hold it: a second bag of a
    product within ``within_s`` of the first with no scan of it in between."""
    name = "two_bags_no_scan"
    description = "a second bag of a product with no scan of it since the first"
    needs = ("bag", "scan")
    thresholds = {"within_s": 60.0, "min_confidence": 0.5}
    ranges = {"within_s": (0.0, 600.0), "min_confidence": (0.0, 1.0)}

    def evaluate(self, events, now, pos_scans):
        out = []
        for e in events:
            if e.confidence < self.th["min_confidence"] or e.activity not in ("bag", "scan"):
                continue
            record, new = self.seen.take(e.activity, e)
            if not new or e.activity != "bag":
                continue
            before = [b for b in self.seen.store("bag")[e.product] if 0 <= e.start - b.end <= self.th["within_s"]]
            scans = self.seen.store("scan").get(e.product, ())
            if before and not any(before[-1].end <= s.start <= e.start for s in scans):
                out.append(draft(self.name, e, [before[-1].event, e]))
        return out


@pytest.fixture
def two_bags():
    """TwoBagsNoScan registered for one test (the registry is the process's: it leaves with the test)."""
    assert register_rule(TwoBagsNoScan) is TwoBagsNoScan
    try:
        yield TwoBagsNoScan
    finally:
        del RULES[TwoBagsNoScan.name]


def test_a_rule_written_as_one_class_is_picked_up_through_the_registry(two_bags, tmp_path):
    from types import SimpleNamespace

    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    name = "two_bags_no_scan"
    assert list(RULES)[-1] == name and RULES[name].thresholds == {"within_s": 60.0, "min_confidence": 0.5}
    with pytest.raises(ValueError, match="registered already"):
        register_rule(TwoBagsNoScan)
    # the engine runs it beside the shipped rules, and forgets what it took in as it forgets theirs
    e = RuleEngine({name: {}, "bagged_without_scan": {}}, ALL)
    events = [ev("scan", "apple", 10, 12), ev("bag", "apple", 13, 15), ev("bag", "apple", 30, 32),
              ev("bag", "bread", 40, 42), ev("scan", "bread", 44, 46), ev("bag", "bread", 50, 52)]
    got = e.evaluate(events, now=60.0)
    assert [(d["rule"], d["product"], d["start"]) for d in got if d["rule"] == name] == [(name, "apple", 30.0)]
    assert e.evaluate(events, now=70.0) == []             # the same events again: nothing new
    e.evaluate([], now=60.0 + 2 * KEEP_S)
    assert e.state_size() == 0
    with pytest.raises(ValueError, match="rule two_bags_no_scan: threshold within_s must be in 0..600, got 900"):
        RuleEngine({name: {"within_s": 900}}, ALL)
    with pytest.raises(ValueError, match="rule two_bags_no_scan needs the activity scan"):
        RuleEngine({name: {}}, ["bag", "take"])
    # the config's checks: the name is known at load, the thresholds checked against the bundle at start
    s = AlertSettings.model_validate({"rules": {name: {"within_s": 30}}, "streams": {"lane2": {name: False}}})
    s.check_rules(ALL, ["lane1", "lane2"])
    with pytest.raises(ValueError, match="alerts.rules: rule two_bags_no_scan: unknown threshold 'within'"):
        AlertSettings.model_validate({"rules": {name: {"within": 30}}}).check_rules(ALL, [])
    # the status names it with its thresholds, and the service raises its alerts
    lane = SimpleNamespace(name="lane1", wall_origin=None, engine=SimpleNamespace(labels=ALL, event_activities=ALL),
                           stream=SimpleNamespace(coverage={"start": 0.0, "end": 60.0}))
    svc = AlertService(s, tmp_path / "state", evaluate=False, events=lambda rt, w: events)
    try:
        st = svc.status("lane1")
        assert st["rules"] == [name] and st["stream_rules"] == {name: {"within_s": 30.0, "min_confidence": 0.5}}
        assert svc.status("lane2")["stream_rules"] == {}
        assert [(a.rule, a.product) for a in svc.evaluate(lane)] == [(name, "apple")]
    finally:
        svc.close()
    assert f"| `{name}` | `within_s` | 60 | 0–600 |" in thresholds_table()


def test_a_rule_that_breaks_the_contract_is_not_registered():
    class NoRange(TwoBagsNoScan):
        name = "bad_default"
        thresholds = {"within_s": 900.0}
        ranges = {"within_s": (0.0, 600.0)}

    class Stray(TwoBagsNoScan):
        name = "stray_range"
        ranges = {"lookback_s": (0.0, 10.0)}

    for cls, said in ((NoRange, "the default within_s 900 is outside 0..600"),
                      (Stray, "a range for 'lookback_s', which is not one of its thresholds")):
        with pytest.raises(ValueError, match=said):
            register_rule(cls)
        assert cls.name not in RULES
    with pytest.raises(TypeError):
        register_rule(dict)


def test_the_docs_list_every_rules_thresholds_as_the_registry_does():
    assert thresholds_table() in (REPO / "docs" / "alerts.md").read_text()


def test_a_scanned_and_bagged_item_raises_nothing_an_unscanned_one_does():
    e = engine()
    events = [ev("pick_up", "milk_carton", 10, 13), ev("scan", "milk_carton", 14, 20), ev("bag", "milk_carton", 21, 24),
              ev("pick_up", "apple", 30, 33), ev("bag", "apple", 34, 37)]
    drafts = e.evaluate(events, now=60.0)
    assert [(d["rule"], d["product"], d["start"], d["end"]) for d in drafts] == [("bagged_without_scan", "apple", 34.0, 37.0)]
    d = drafts[0]
    assert d["box"] == [0.1, 0.2, 0.3, 0.4] and d["confidence"] == 0.9
    assert d["evidence"] == [events[-1].to_dict()]


def test_one_scan_pays_for_one_bag_of_that_product():
    e = engine(bagged_without_scan={})
    # a second can picked up after the first was bagged (without the pick-up: the first read again, below)
    events = [ev("scan", "soda_can", 10, 15), ev("bag", "soda_can", 16, 18), ev("pick_up", "soda_can", 20, 23),
              ev("bag", "soda_can", 25, 27)]
    drafts = e.evaluate(events, now=40.0)
    assert [(d["product"], d["start"]) for d in drafts] == [("soda_can", 25.0)]


def test_a_bag_followed_by_a_scan_of_its_product_was_the_item_in_hand_before_its_scan():
    # the model read the pick-up as a bag; the scan 3 s later pays for the real bag after it
    events = [ev("bag", "apple", 10, 12), ev("scan", "apple", 15, 18), ev("bag", "apple", 20, 23)]
    assert engine(bagged_without_scan={"settle_s": 6}).evaluate(events, now=60.0) == []
    # without waiting, the false bag has no scan before it: a false alert
    assert [d["start"] for d in engine(bagged_without_scan={"settle_s": 0}).evaluate(events, now=60.0)] == [10.0]
    # a scan of another product after an unpaid bag pays nothing: the next item's
    drafts = engine(bagged_without_scan={"settle_s": 6}).evaluate([ev("bag", "apple", 10, 12), ev("scan", "bread", 15, 18)],
                                                                  now=60.0)
    assert [d["product"] for d in drafts] == ["apple"]


def test_readings_of_one_bag_as_two_products_or_split_in_two_are_one_item():
    # one hand bags one item at a time: a bag read as apple and as bread at once is one item, paid by
    # the apple's scan; a bag read in two pieces a second apart is one item too
    events = [ev("scan", "apple", 10, 14), ev("bag", "bread", 15, 19.5), ev("bag", "apple", 16, 20),
              ev("scan", "milk_carton", 30, 34), ev("bag", "milk_carton", 35, 37), ev("bag", "milk_carton", 37.8, 39)]
    assert engine(bagged_without_scan={"other_product_scans": 0}).evaluate(events, now=60.0) == []
    # an unpaid item read as two products raises one alert, naming the likelier product, with both readings
    drafts = engine(bagged_without_scan={}).evaluate([ev("bag", "bread", 15, 19.5, confidence=0.75),
                                                      ev("bag", "apple", 16, 20, confidence=0.8)], now=60.0)
    assert [(d["product"], len(d["evidence"])) for d in drafts] == [("apple", 2)]
    # a reading that comes one evaluation later takes the judged twin's outcome: paid, or alerted already
    e = engine(bagged_without_scan={})
    assert [d["product"] for d in e.evaluate([ev("bag", "apple", 16, 20)], now=30.0)] == ["apple"]
    assert e.evaluate([ev("bag", "bread", 17, 21)], now=46.0) == []
    # with same_bag_s 0 only overlapping readings are one item
    e = engine(bagged_without_scan={"same_bag_s": 0, "other_product_scans": 0, "reread_s": 0})
    drafts = e.evaluate([ev("scan", "milk_carton", 30, 34), ev("bag", "milk_carton", 35, 37),
                         ev("bag", "milk_carton", 37.8, 39)], now=60.0)
    assert [d["start"] for d in drafts] == [37.8]


def test_a_scanned_item_handed_over_uses_up_its_scan():
    # scanned, then handed to someone across the counter: that scan does not pay for the next bag
    events = [ev("scan", "wine_bottle", 10, 15), ev("hand_over", "wine_bottle", 16, 22), ev("pick_up", "wine_bottle", 35, 38),
              ev("bag", "wine_bottle", 40, 43)]
    assert [(d["product"], d["start"]) for d in engine().evaluate(events, now=60.0)] == [("wine_bottle", 40.0)]
    # a hand-over alone raises nothing
    assert engine().evaluate([ev("hand_over", "apple", 10, 15)], now=60.0) == []


def test_a_scan_too_long_before_does_not_count():
    events = [ev("scan", "bread", 0, 5), ev("bag", "bread", 100, 103)]
    assert [d["product"] for d in engine(bagged_without_scan={"lookback_s": 60}).evaluate(events, now=120.0)] == ["bread"]
    assert engine(bagged_without_scan={"lookback_s": 120}).evaluate(events, now=120.0) == []


def test_an_unused_scan_of_another_product_pays_when_none_of_the_bags_is_left():
    # the apple scan is the bread's, read as the wrong product: by default it pays for the bread's bag
    events = [ev("scan", "apple", 90, 95), ev("bag", "bread", 100, 103)]
    assert engine().evaluate(events, now=120.0) == []
    strict = engine(bagged_without_scan={"other_product_scans": 0})
    assert [d["product"] for d in strict.evaluate(events, now=120.0)] == ["bread"]
    # a scan already used by a bag of its own product pays for nothing else
    events = [ev("scan", "apple", 90, 95), ev("bag", "apple", 96, 98), ev("bag", "bread", 100, 103)]
    assert [d["product"] for d in engine().evaluate(events, now=120.0)] == ["bread"]
    # a bag takes a scan of its own product before another product's
    events = [ev("scan", "apple", 80, 85), ev("scan", "bread", 90, 95), ev("bag", "bread", 100, 103),
              ev("bag", "apple", 104, 106)]
    assert engine().evaluate(events, now=120.0) == []


def test_dedup_across_overlapping_windows_and_moved_edges():
    e = engine()
    first = [ev("bag", "cheese", 50, 53), ev("pass_around", "broccoli", 40, 42)]
    got = e.evaluate(first, now=60.0)
    assert sorted(d["rule"] for d in got) == ["bagged_without_scan", "pass_around"]
    # the next window overlaps: the same events again, one re-read with edges moved a little
    again = [ev("bag", "cheese", 50.4, 53.6), ev("pass_around", "broccoli", 40, 42), ev("bag", "cheese", 80, 82)]
    got = e.evaluate(again, now=90.0)
    assert [(d["rule"], d["start"]) for d in got] == [("bagged_without_scan", 80.0)]
    assert e.evaluate(again, now=95.0) == []


def test_a_bag_waits_settle_s_for_a_scan_read_late():
    e = engine(bagged_without_scan={"settle_s": 5})
    assert e.evaluate([ev("bag", "wine_bottle", 30, 33)], now=34.0) == []          # not judged yet
    assert e.evaluate([ev("scan", "wine_bottle", 24, 29)], now=36.0) == []        # the scan arrives: no alert
    e = engine(bagged_without_scan={"settle_s": 5})
    assert e.evaluate([ev("bag", "wine_bottle", 30, 33)], now=34.0) == []
    # not handed over again, still judged once settle_s has passed
    got = e.evaluate([], now=38.5)
    assert [(d["product"], d["start"]) for d in got] == [("wine_bottle", 30.0)]
    assert e.evaluate([ev("bag", "wine_bottle", 30, 33)], now=40.0) == []


def test_next_due_names_when_a_waiting_decision_can_be_made_without_new_events():
    e = engine(bagged_without_scan={"settle_s": 6}, pass_around={"match_s": 8})
    assert e.next_due() is None
    assert e.evaluate([ev("bag", "wine_bottle", 30, 33)], now=34.0) == []
    assert e.next_due() == 39.0                       # the bag's end + settle_s
    assert e.evaluate([], now=38.9) == [] and e.next_due() == 39.0
    got = e.evaluate([], now=39.0)                    # a tick at its due time: judged, nothing waits
    assert [(d["product"], d["start"]) for d in got] == [("wine_bottle", 30.0)] and e.next_due() is None
    # with the till's scans, a handling over the scanner waits match_s for its till read
    pos = RuleEngine({"pass_around": {"match_s": 8}}, ALL, scans="pos")
    assert pos.evaluate([ev("scan", "apple", 50, 52)], now=53.0, pos_scans=[]) == [] and pos.next_due() == 60.0
    # then, unmatched, up to read_after_s (15 s) for a later read of its product
    assert pos.evaluate([], now=60.5, pos_scans=[]) == [] and pos.next_due() == 67.0
    assert [d["rule"] for d in pos.evaluate([], now=67.0, pos_scans=[])] == ["pass_around"] and pos.next_due() is None


def test_confidence_thresholds():
    e = engine(bagged_without_scan={"min_confidence": 0.8, "scan_min_confidence": 0.5}, pass_around={"min_confidence": 0.7})
    events = [ev("bag", "apple", 10, 12, confidence=0.6),                                  # too unsure to alert
              ev("scan", "bread", 20, 24, confidence=0.4), ev("bag", "bread", 25, 27, confidence=0.9),  # scan too unsure
              ev("pass_around", "cheese", 30, 32, confidence=0.65), ev("pass_around", "chips_bag", 40, 42, confidence=0.75)]
    got = e.evaluate(events, now=60.0)
    assert [(d["rule"], d["product"]) for d in got] == [("bagged_without_scan", "bread"), ("pass_around", "chips_bag")]


def test_only_the_configured_rules_run():
    events = [ev("bag", "apple", 10, 12), ev("pass_around", "cheese", 30, 32)]
    assert [d["rule"] for d in RuleEngine({"pass_around": None}, ALL).evaluate(events, 60.0)] == ["pass_around"]
    assert [d["rule"] for d in RuleEngine({"bagged_without_scan": {}}, ALL).evaluate(events, 60.0)] == ["bagged_without_scan"]
    assert RuleEngine({}, ALL).evaluate(events, 60.0) == []


def test_memory_stays_bounded_over_a_long_stream():
    e = engine()
    sizes = []
    for k in range(4000):   # ~44 hours of a busy lane: a scanned and bagged item every 40 s, some not scanned
        t = 40.0 * k
        events = [ev("scan", f"p{k % 7}", t, t + 4), ev("bag", f"p{k % 7}", t + 5, t + 8)]
        if k % 10 == 0:
            events.append(ev("bag", f"q{k % 3}", t + 20, t + 23))
        e.evaluate(events, now=t + 40.0)
        sizes.append(e.state_size())
    assert max(sizes) <= 3 * (KEEP_S / 40.0) + 10   # what happens within KEEP_S, not since the start
    assert sum(len(q) for rule in e._running for q in rule.seen.queues.values()) <= 2   # bags waiting settle_s


def test_events_older_than_the_memory_are_ignored_not_raised_again():
    e = engine()
    assert len(e.evaluate([ev("bag", "apple", 10, 12)], now=20.0)) == 1
    e.evaluate([], now=20.0 + 2 * KEEP_S)
    assert e.evaluate([ev("bag", "apple", 10, 12)], now=20.0 + 2 * KEEP_S) == []


@pytest.mark.parametrize("rules, activities, message", [
    ({"no_such_rule": {}}, ALL, "unknown rule 'no_such_rule' (rules: bagged_without_scan, left_in_basket, pass_around"),
    ({"bagged_without_scan": {"lookback": 30}}, ALL, "rule bagged_without_scan: unknown threshold 'lookback' (known: lookback_s"),
    ({"pass_around": {"min_confidence": 1.5}}, ALL, "threshold min_confidence must be in 0..1, got 1.5"),
    ({"bagged_without_scan": {"settle_s": -1}}, ALL, "threshold settle_s must be in 0..inf, got -1"),
    ({"bagged_without_scan": {"lookback_s": "long"}}, ALL, "threshold lookback_s must be a number, got 'long'"),
    ({"bagged_without_scan": {"lookback_s": True}}, ALL, "must be a number, got True"),
    ({"pass_around": 3}, ALL, "rule pass_around: thresholds must be a mapping"),
    ({"pass_around": {}}, list(BASE_ACTIVITIES), "rule pass_around needs the activity pass_around, which the bundle's labels"),
    ({"bagged_without_scan": {}}, ["take", "look"], "needs the activities bag, scan, which the bundle's labels (take, look)"),
])
def test_bad_rules_are_one_line_errors(rules, activities, message):
    with pytest.raises(ValueError) as err:
        RuleEngine(rules, activities)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_eight_activity_bundle_runs_bagged_without_scan():
    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES))
    assert [d["product"] for d in e.evaluate([ev("bag", "apple", 10, 12)], 30.0)] == ["apple"]


@pytest.mark.parametrize("scans", ["vision", "pos"])
def test_on_the_generator_ground_truth_the_rules_find_every_target_and_nothing_else(scans):
    """The oracle of tools/accuracy/alerts_eval.py: annotated events in (with the till's record of
    each good read for ``pos``), alerts scored against the items bagged unscanned and the passes
    around the scanner (many of each at these rates)."""
    from edge_runtime.checkout import CheckoutVideo, heldout_video
    from tools.accuracy.alerts_eval import oracle, paid_bags, score, targets

    # the rules annotated events can feed (left_in_basket reads the item tracks' basket stays)
    rules = {name: dict(spec.thresholds) for name, spec in RULES.items() if set(spec.needs) <= set(ALL)}
    found = {r: 0 for r in rules}
    for i in range(2):
        seed, look = heldout_video(0, i)
        ann = CheckoutVideo(seed=seed, duration_s=1800.0, look=look, shrink="0.15,0.15,0.1").annotations()
        want, raised = targets(ann), oracle(ann, rules, clip_s=16.0, scans=scans)
        for r in rules:
            s = score([x for x in raised if x[0]["rule"] == r], want[r], paid_bags(ann))
            assert s["found"] == s["targets"] and s["false"] == 0, (r, s)
            wait = rules[r].get("settle_s", 0.0) + (rules[r].get("match_s", 0.0) if scans == "pos" else 0.0)
            assert all(0 < lat <= 16.0 + wait for lat in s["latency_s"]), s
            found[r] += s["found"]
    assert min(found.values()) >= 3, found


def till(product: str, t: float) -> Event:
    return Event("scan", -1, product, t, t, 1.0, None, ("pos",))


def test_with_the_tills_scans_bags_are_judged_against_them_not_the_models_scans():
    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    events = [ev("scan", "apple", 10, 15), ev("bag", "apple", 16, 18),          # the model saw a scan the till did not read
              ev("bag", "milk_carton", 30, 33)]                                   # the till read it: paid
    drafts = e.evaluate(events, now=40.0, pos_scans=[till("milk_carton", 28.0)])
    assert [(d["rule"], d["product"], d["start"]) for d in drafts] == [("bagged_without_scan", "apple", 16.0)]
    # the same till scan given again at the next evaluation pays for nothing more; a new one pays for the next bag
    drafts = e.evaluate([ev("pick_up", "milk_carton", 45, 48), ev("bag", "milk_carton", 50, 52), ev("bag", "soda_can", 60, 62)],
                        now=70.0, pos_scans=[till("milk_carton", 28.0), till("soda_can", 58.0)])
    assert [(d["product"], d["start"]) for d in drafts] == [("milk_carton", 50.0)]


def test_with_the_tills_scans_a_handling_over_the_scanner_the_till_did_not_read_is_a_pass_around():
    # the 8-activity bundle has no pass_around label: with the till's scans the rule runs on its scan events
    with pytest.raises(ValueError, match="needs the activity pass_around"):
        RuleEngine({"pass_around": {}}, list(BASE_ACTIVITIES))
    e = RuleEngine({"pass_around": {"match_s": 2.0}}, list(BASE_ACTIVITIES), scans="pos")
    events = [ev("scan", "apple", 10, 15),                        # read by the till at 13: nothing
              ev("scan", "soda_can", 20, 24, confidence=0.9),     # nothing read within 2 s: a pass-around
              ev("scan", "cheese", 30, 33, confidence=0.3)]       # too unsure to judge
    assert e.evaluate(events, now=25.0, pos_scans=[till("apple", 13.0)]) == []  # soda_can waits match_s after its end
    drafts = e.evaluate(events, now=40.0, pos_scans=[till("apple", 13.0)])
    assert [(d["rule"], d["product"], d["start"], d["end"]) for d in drafts] == [("pass_around", "soda_can", 20.0, 24.0)]
    assert e.evaluate(events, now=60.0, pos_scans=[till("apple", 13.0)]) == []   # read again: raised once
    # a till read of another product just after the event's edge matches it (the model's edges are seconds off)
    e = RuleEngine({"pass_around": {}}, list(BASE_ACTIVITIES), scans="pos")
    assert e.evaluate([ev("scan", "soda_can", 20, 24)], now=40.0, pos_scans=[till("chips_bag", 25.5)]) == []
    with pytest.raises(ValueError, match="scans must be one of vision, pos"):
        RuleEngine({}, ALL, scans="camera")


def test_a_paid_item_read_leaving_twice_raises_nothing_a_second_item_of_its_product_does():
    till_at = [till("cheese", 10.0)]
    # scan at 10, a hold read as a bag at 12-15 takes the scan, the real bag at 30-33: the same item
    events = [ev("bag", "cheese", 12, 15), ev("hold", "cheese", 16, 29), ev("bag", "cheese", 30, 33)]
    e = RuleEngine({"bagged_without_scan": {}}, ALL, scans="pos")
    assert e.evaluate(events, now=60.0, pos_scans=till_at) == []
    # reread_s 0 turns the check off: the second reading finds no scan left
    e = RuleEngine({"bagged_without_scan": {"reread_s": 0}}, ALL, scans="pos")
    assert [d["start"] for d in e.evaluate(events, now=60.0, pos_scans=till_at)] == [30.0]
    # a second cheese picked up (or scanned by the model, or passed over the glass) in between is another item
    for new_item in ("pick_up", "scan", "pass_around"):
        e = RuleEngine({"bagged_without_scan": {}}, ALL, scans="pos")
        drafts = e.evaluate(events[:2] + [ev(new_item, "cheese", 26, 29), events[2]], now=60.0, pos_scans=till_at)
        assert [d["start"] for d in drafts] == [30.0], new_item
    # longer than reread_s after the paid bag: judged on its own
    e = RuleEngine({"bagged_without_scan": {"reread_s": 10}}, ALL, scans="pos")
    assert [d["start"] for d in e.evaluate(events, now=60.0, pos_scans=till_at)] == [30.0]


def test_a_paid_item_still_in_hand_over_the_scanner_is_no_pass_around_a_second_one_after_the_first_left_is():
    e = RuleEngine({"pass_around": {"match_s": 2.0, "paid_s": 30.0}}, list(BASE_ACTIVITIES), scans="pos")
    # the till read the milk carton at 10; at 25 it is held over the glass (read as a scan), then bagged
    events = [ev("scan", "milk_carton", 25, 28), ev("bag", "milk_carton", 29, 31)]
    assert e.evaluate(events, now=60.0, pos_scans=[till("milk_carton", 10.0)]) == []
    # a second carton over the glass after the first was seen leaving: the read at 10 paid for the first
    events = [ev("scan", "milk_carton", 40, 43)]
    drafts = e.evaluate(events, now=60.0, pos_scans=[till("milk_carton", 10.0)])
    assert [(d["product"], d["start"]) for d in drafts] == [("milk_carton", 40.0)]
    # a read of the product longer ago than paid_s covers nothing; paid_s 0 turns the check off
    for paid_s, product_read_at in ((30.0, 100.0), (0.0, 131.0)):
        e = RuleEngine({"pass_around": {"match_s": 2.0, "paid_s": paid_s}}, list(BASE_ACTIVITIES), scans="pos")
        drafts = e.evaluate([ev("scan", "apple", 135, 138)], now=160.0, pos_scans=[till("apple", product_read_at)])
        assert [d["product"] for d in drafts] == ["apple"]
    assert RULES["pass_around"].thresholds["paid_s"] == 30.0
    with pytest.raises(ValueError, match="paid_s must be in 0..120"):
        RuleEngine({"pass_around": {"paid_s": 500}}, list(BASE_ACTIVITIES), scans="pos")


def test_an_event_round_trips_through_its_dict_and_json():
    for e in (ev("bag", "apple", 34.125, 37.5, 0.6146), Event("scan", 1, "soda_can", 1.0, 2.0, 0.3),
              Event("hold", 4, "x", 0.1 + 0.2, 1 / 3, 0.30000000000000004, (0.1, 0.2, 0.3, 0.4), ("memory", "timeline"))):
        d = e.to_dict()
        assert Event.from_dict(d) == e
        assert Event.from_dict(json.loads(json.dumps(d))) == e   # floats exactly, box and tracks as tuples
        assert Event.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert Event.from_dict({k: v for k, v in ev("bag", "apple", 1, 2).to_dict().items() if k != "tracks"}).tracks == ()


# -- tools/accuracy/alerts_eval.py: --set, --save-events, --events-from -------------------------------------

def _eval(capsys, *argv):
    from tools.accuracy.alerts_eval import main

    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr()


@pytest.mark.parametrize("setting, named", [
    ("no_such_rule.lookback_s=90", "unknown rule 'no_such_rule'"),
    ("bagged_without_scan.lookback=90", "unknown threshold 'lookback'"),
    ("bagged_without_scan.min_confidence=1.5", "threshold min_confidence must be in 0..1, got 1.5"),
    ("bagged_without_scan.lookback_s=-1", "threshold lookback_s must be in 0..inf, got -1"),
    ("bagged_without_scan.lookback_s=ninety", "threshold lookback_s must be a number, got 'ninety'"),
    ("bagged_without_scan.lookback_s=nan", "threshold lookback_s must be a number"),
    ("bagged_without_scan.lookback_s", "expected RULE.KEY=VALUE"),
    ("lookback_s=90", "expected RULE.KEY=VALUE"),
])
def test_set_refuses_a_bad_threshold_with_one_line(capsys, setting, named):
    rc, out = _eval(capsys, "--events", "truth", "--videos", "1", "--video-s", "60", "--set", setting)
    assert rc == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alerts_eval: --set: ") and named in lines[0], out.err


def test_set_changes_the_thresholds_recorded(capsys, tmp_path):
    rc, _ = _eval(capsys, "--events", "truth", "--videos", "1", "--video-s", "60", "--json", str(tmp_path / "r.json"),
                  "--set", "bagged_without_scan.other_product_scans=0", "--set", "bagged_without_scan.lookback_s=90",
                  "--set", "pass_around.min_confidence=0.85")
    assert rc == 0
    rules = json.loads((tmp_path / "r.json").read_text())["rules"]
    assert rules["bagged_without_scan"] == {**RULES["bagged_without_scan"].thresholds, "other_product_scans": 0.0,
                                            "lookback_s": 90.0}
    assert rules["pass_around"] == {**RULES["pass_around"].thresholds, "min_confidence": 0.85}


# eval seed 11, video 0's first 90 s at raised scan avoidance: the shipped bundle's events raise an alert,
# and a bag confidence of 1 leaves none, whatever the model (so the replay below compares something)
STREAM = ("--events", "model", "--videos", "1", "--video-s", "90", "--threads", "1", "--eval-seed", "11",
          "--shrink", "0.5,0.5,0")
OWN = ("--set", "bagged_without_scan.min_confidence=1", "--set", "bagged_without_scan.item_min_confidence=1",
       "--set", "bagged_without_scan.late_min_confidence=1")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One streamed run (default thresholds) that saved its events, and one with a bag confidence of 1."""
    from tools.accuracy.alerts_eval import main

    d = tmp_path_factory.mktemp("alerts_eval")
    assert main([*STREAM, "--save-events", str(d / "events.json"), "--json", str(d / "streamed.json")]) == 0
    assert main([*STREAM, *OWN, "--json", str(d / "streamed_own.json")]) == 0
    return d


@pytest.mark.slow  # the accuracy tool (alerts_eval) streams a 90 s video twice
def test_replaying_saved_events_gives_the_streamed_results(capsys, saved, tmp_path):
    streamed = json.loads((saved / "streamed.json").read_text())
    assert streamed["results"]["model"]["bagged_without_scan"]["alerts"] > 0
    assert streamed["saved_events"] == str(saved / "events.json")
    doc = json.loads((saved / "events.json").read_text())
    manifest = json.loads((REPO / "engines" / "lvm-tiny-fp32" / "manifest.json").read_text())
    assert doc["bundle"] == "engines/lvm-tiny-fp32" and doc["eval_seed"] == 11 and doc["videos"] == 1
    assert doc["video_s"] == 90.0 and doc["shrink"] == {"bagged_unscanned": 0.5, "pass_around": 0.5, "left_in_basket": 0.0}
    assert doc["checkpoint_sha256"] == manifest["checkpoint"]["sha256"]
    assert doc["reader_file_sha256"] == manifest["answers"]["reader"]["file_sha256"]
    (v,) = doc["per_video"]
    assert {k: v[k] for k in ("seed", "look", "scanned_items", "targets")} == \
        {k: streamed["videos"][0][k] for k in ("seed", "look", "scanned_items", "targets")}
    # the shipped bundle's event path: the rules are evaluated after every second's frames, 6 memory commits
    ms = streamed["videos"][0]["model_stream"]
    assert len(v["commits"]) == ms["evaluations"] == 90 and ms["commits"] == 6
    for c in v["commits"]:
        for r in c["reads"]:
            assert r["window"][1] == c["now"] and r["window"][0] >= c["cov_start"]
            assert all(Event.from_dict(e).to_dict() == e for e in r["events"])
    assert sum(len(r["events"]) for c in v["commits"] for r in c["reads"]) > 0
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]

    rc, out = _eval(capsys, "--events-from", str(saved / "events.json"), "--json", str(tmp_path / "replayed.json"))
    assert rc == 0, out.err
    replayed = json.loads((tmp_path / "replayed.json").read_text())
    assert replayed["results"] == streamed["results"] and replayed["rules"] == streamed["rules"]
    assert replayed["events_from"] == str(saved / "events.json")
    assert {k: replayed[k] for k in ("bundle", "checkpoint_sha256", "reader_file_sha256", "eval_seed", "shrink")} == \
        {k: streamed[k] for k in ("bundle", "checkpoint_sha256", "reader_file_sha256", "eval_seed", "shrink")}
    assert "commits replayed" in out.out and "| model | bagged_without_scan |" in out.out

    # other thresholds, replayed: what a stream with them gives, and the thresholds recorded
    rc, out = _eval(capsys, "--events-from", str(saved / "events.json"), *OWN, "--json", str(tmp_path / "own.json"))
    assert rc == 0, out.err
    own, streamed_own = json.loads((tmp_path / "own.json").read_text()), json.loads((saved / "streamed_own.json").read_text())
    assert own["rules"]["bagged_without_scan"]["min_confidence"] == 1.0
    assert own["results"] == streamed_own["results"] != streamed["results"]
    assert own["results"]["model"]["bagged_without_scan"]["alerts"] == 0

    # the explicit values the file was saved with are accepted; --events both adds the oracle
    rc, out = _eval(capsys, "--events-from", str(saved / "events.json"), "--events", "both", "--eval-seed", "11",
                    "--videos", "1", "--video-s", "90", "--shrink", "0.5,0.5,0", "--json", str(tmp_path / "both.json"))
    assert rc == 0, out.err
    both = json.loads((tmp_path / "both.json").read_text())["results"]
    assert both["model"] == streamed["results"]["model"] and both["truth"]["bagged_without_scan"]["false_alerts"] == 0


@pytest.mark.parametrize("argv, named", [
    (("--eval-seed", "2"), "saved with --eval-seed 11, not 2"),
    (("--videos", "3"), "saved with --videos 1, not 3"),
    (("--video-s", "120"), "saved with --video-s 90, not 120"),
    (("--shrink", "default"), "saved with --shrink 0.5,0.5,0, not default"),
    (("--events", "truth"), "--events truth"),
    (("--save-events", "x.json"), "saved already"),
])
def test_a_replay_that_does_not_match_its_file_is_refused(capsys, saved, argv, named):
    rc, out = _eval(capsys, "--events-from", str(saved / "events.json"), *argv)
    lines = out.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and named in lines[0], out.err


def test_a_corrupt_or_foreign_events_file_is_refused(capsys, saved, tmp_path):
    good = (saved / "events.json").read_text()
    doc = json.loads(good)
    doc["per_video"][0]["commits"][2]["reads"][0]["window"][0] += 1.0   # not the window the rules read
    bad_window = json.dumps(doc)
    doc = json.loads(good)
    del doc["per_video"][0]["commits"][0]["reads"][0]["events"]
    cases = {"truncated.json": (good[: len(good) // 2], "cannot read it"),
             "foreign.json": (json.dumps({"tool": "something else"}), "not a --save-events file"),
             "list.json": ("[1, 2]", "not a --save-events file"),
             "missing.json": (json.dumps(doc), "not a valid --save-events file"),
             "window.json": (bad_window, "the rules read the window"),
             "binary.json": (b"\x89PNG\xff\xfe", "cannot read it")}
    for name, (text, named) in {**cases, "absent.json": (None, "cannot read it")}.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text)
        rc, out = _eval(capsys, "--events-from", str(path))
        lines = out.err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"alerts_eval: --events-from {path}: "), (name, out.err)
        assert named in lines[0], (name, out.err)


def test_a_sweep_replays_each_setting_as_alerts_eval_does(capsys, saved, tmp_path):
    from tools.accuracy.alerts_sweep import main as sweep

    streamed = json.loads((saved / "streamed.json").read_text())["results"]["model"]["bagged_without_scan"]
    own = json.loads((saved / "streamed_own.json").read_text())["results"]["model"]["bagged_without_scan"]
    capsys.readouterr()
    # the shipped bundle's rules read its item events: their threshold is item_min_confidence
    # (and late_min_confidence, the track labeler's second look at an ended track)
    used = json.loads((saved / "streamed.json").read_text())["rules"]["bagged_without_scan"]
    default, late = used["item_min_confidence"], used["late_min_confidence"]
    assert sweep(["--events-from", str(saved / "events.json"), "--rule", "bagged_without_scan",
                  "--grid", f"item_min_confidence={default},1", "--grid", f"late_min_confidence={late},1",
                  "--json", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [(r["thresholds"]["item_min_confidence"], r["thresholds"]["late_min_confidence"]) for r in rows] == \
        [(default, late), (default, 1.0), (1.0, late), (1.0, 1.0)]
    for row, want in zip((rows[0], rows[3]), (streamed, own)):
        assert (row["found"], row["false_alerts"]) == (want["found"], want["false_alerts"])
    # with the till's scans, the pass-around rule runs on the 8-activity bundle's events
    assert sweep(["--events-from", str(saved / "events.json"), "--rule", "pass_around", "--scans", "pos",
                  "--grid", "match_s=2,8"]) == 0
    assert "match_s" in capsys.readouterr().out
    for bad, said in ((["--grid", "min_confidence=2"], "must be in 0..1"), (["--grid", "nope=1"], "unknown threshold")):
        assert sweep(["--events-from", str(saved / "events.json"), "--rule", "bagged_without_scan", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err


def test_an_item_held_over_the_scanner_then_read_is_no_pass_around_with_read_after_s():
    th = {"match_s": 2.0, "read_after_s": 20.0, "left_min_confidence": 0.7}
    held = [ev("scan", "soda_can", 20, 24)]                  # over the glass, no read within match_s
    # the till reads the soda can 11 s after, before any of it was seen leaving: it was held, then scanned
    e = RuleEngine({"pass_around": th}, list(BASE_ACTIVITIES), scans="pos")
    assert e.evaluate(held, now=30.0) == [] and e.next_due() == 44.0   # waits for a read until 24 + 20
    assert e.evaluate([], now=36.0, pos_scans=[till("soda_can", 35.0)]) == []
    assert e.evaluate([], now=60.0) == [] and e.next_due() is None
    # no read within read_after_s: raised when it has passed, not before
    e = RuleEngine({"pass_around": th}, list(BASE_ACTIVITIES), scans="pos")
    assert e.evaluate(held, now=43.0) == []
    assert [d["product"] for d in e.evaluate([], now=44.0)] == ["soda_can"]
    # seen leaving the counter first (a bag at left_min_confidence): raised then, the later read is another item's
    e = RuleEngine({"pass_around": th}, list(BASE_ACTIVITIES), scans="pos")
    drafts = e.evaluate(held + [ev("bag", "soda_can", 25, 28, confidence=0.75)], now=30.0)
    assert [d["product"] for d in drafts] == ["soda_can"]
    # a "bag" read less surely than left_min_confidence (a hold read as a bag) does not decide it
    e = RuleEngine({"pass_around": th}, list(BASE_ACTIVITIES), scans="pos")
    assert e.evaluate(held + [ev("bag", "soda_can", 25, 28, confidence=0.6)], now=30.0) == []
    assert e.evaluate([], now=60.0, pos_scans=[till("soda_can", 35.0)]) == []
    # read_after_s 0: judged at match_s as before
    e = RuleEngine({"pass_around": {"match_s": 2.0, "read_after_s": 0.0}}, list(BASE_ACTIVITIES), scans="pos")
    assert [d["product"] for d in e.evaluate(held, now=30.0, pos_scans=[till("soda_can", 35.0)])] == ["soda_can"]


def test_with_the_till_a_scanned_item_lost_by_its_track_is_paid_when_it_is_bagged_as_another_track():
    def item(activity, product, start, end, track, paid=False, confidence=0.9):
        return Event(activity, ALL.index(activity), product, start, end, confidence, (0.1, 0.2, 0.3, 0.4), ("items",),
                     item=track, paid=paid)

    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    reads = [till("chips_bag", 70.0), till("apple", 200.0)]
    # track 15 is scanned (its read reserved for it), then lost; track 0 carries the chips into the bag
    assert e.evaluate([item("scan", "chips_bag", 67, 78, 15, paid=True)], now=80.0, pos_scans=reads[:1]) == []
    assert e.evaluate([item("bag", "chips_bag", 117, 119.4, 0)], now=120.0, pos_scans=reads[:1]) == []
    # its read paid once: another chips bag (picked up after) with no scan alerts, as does one of another product
    drafts = e.evaluate([item("pick_up", "chips_bag", 130, 132, 21), item("bag", "chips_bag", 140, 142, 21),
                         item("bag", "soda_can", 150, 152, 22)], now=153.0,
                        pos_scans=reads[:1])
    assert [d["product"] for d in drafts] == ["chips_bag", "soda_can"]
    # a scanned track that leaves itself uses its own read: a later bag of its product by another track alerts
    assert e.evaluate([item("scan", "apple", 198, 202, 30, paid=True), item("bag", "apple", 204, 206, 30, paid=True)],
                      now=207.0, pos_scans=reads) == []
    later = [item("pick_up", "apple", 220, 222, 31), item("bag", "apple", 230, 232, 31)]
    assert [d["product"] for d in e.evaluate(later, now=233.0, pos_scans=reads)] == ["apple"]
    # a bag event below item_min_confidence is not read
    faint = [item("pick_up", "apple", 250, 252, 32), item("bag", "apple", 260, 262, 32, confidence=0.3)]
    assert e.evaluate(faint, now=263.0, pos_scans=reads) == []


def test_the_track_labelers_bag_of_an_ended_track_is_judged_only_where_the_events_as_they_happened_missed_it():
    def item(activity, start, end, track, confidence=0.9, labelled=False, product="soda_can"):
        return Event(activity, ALL.index(activity), product, start, end, confidence, (0.1, 0.2, 0.3, 0.4),
                     ("items", "track_labels") if labelled else ("items",), item=track, paid=False)

    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    # track 1's bag read as it happened (below item_min_confidence) is not judged; the labeler's, once
    # the track has ended, is: unpaid, it alerts, once, though handed over again
    assert e.evaluate([item("bag", 10, 12, 1, confidence=0.3)], now=13.0) == []
    late = item("bag", 10, 12.4, 1, confidence=0.85, labelled=True)
    drafts = e.evaluate([item("bag", 10, 12, 1, confidence=0.3), late], now=15.0)
    assert [(d["product"], d["evidence"][0]["tracks"]) for d in drafts] == [("soda_can", ["items", "track_labels"])]
    assert e.evaluate([late], now=16.0) == []
    # a track whose bag was judged as it happened: the labeler's bag of it (even under another product) adds nothing
    assert [d["start"] for d in e.evaluate([item("bag", 60, 62, 2)], now=63.0)] == [60]
    assert e.evaluate([item("bag", 60, 62.6, 2, labelled=True, product="apple")], now=65.0) == []
    # under late_min_confidence it is not read; a till read pays for one as for any bag
    assert e.evaluate([item("bag", 100, 102, 3, confidence=0.7, labelled=True)], now=105.0) == []
    assert e.evaluate([item("bag", 140, 142, 4, labelled=True)], now=145.0, pos_scans=[till("soda_can", 138.0)]) == []
    off = RuleEngine({"bagged_without_scan": {"late_min_confidence": 1.0}}, list(BASE_ACTIVITIES), scans="pos")
    assert off.evaluate([item("bag", 10, 12, 1, confidence=0.99, labelled=True)], now=15.0) == []
    # a long bag left to the labeler is not judged as it happened: the labeler's bag of its track is
    long = Event("bag", ALL.index("bag"), "soda_can", 200, 209, 0.9, (0.1, 0.2, 0.3, 0.4), ("items", "long_bag"), item=9)
    assert e.evaluate([long], now=210.0) == []
    assert [d["evidence"][0]["tracks"] for d in e.evaluate([long, item("bag", 207, 209, 9, labelled=True)],
                                                           now=212.0)] == [["items", "track_labels"]]
    # with the second look off it is judged as any bag
    assert [d["start"] for d in off.evaluate([long], now=210.0)] == [200]


def test_the_track_labelers_pass_around_of_an_ended_track_is_judged_only_where_the_events_as_they_happened_missed_it():
    def passed(start, end, track, confidence=0.9, labelled=False, paid=False):
        return Event("pass_around", ALL.index("pass_around"), "soda_can", start, end, confidence, (0.1, 0.2, 0.3, 0.4),
                     ("items", "track_labels") if labelled else ("items",), item=track, paid=paid)

    e = RuleEngine({"pass_around": {}, "bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    # track 1's pass-around as it happened was too short to read; the labeler's, once the track has
    # ended, is: no till read since it started, it alerts once item_read_s has passed, once
    assert e.evaluate([passed(10, 10.4, 1)], now=11.0) == []
    late = passed(10, 12, 1, labelled=True)
    assert e.evaluate([late], now=13.0) == []
    drafts = e.evaluate([late], now=16.5)
    assert [(d["rule"], d["evidence"][0]["tracks"]) for d in drafts] == [("pass_around", ["items", "track_labels"])]
    assert e.evaluate([late], now=18.0) == []
    # a track passed around as it happened: the labeler's pass-around of it adds nothing
    assert [d["start"] for d in e.evaluate([passed(30, 32, 2)], now=36.5)] == [30]
    assert e.evaluate([passed(30, 32.4, 2, labelled=True)], now=37.0) == []
    # a scanned track, one under late_min_confidence, one with a till read after it: nothing
    assert e.evaluate([passed(50, 52, 3, labelled=True, paid=True), passed(60, 62, 4, labelled=True, confidence=0.7)],
                      now=70.0) == []
    assert e.evaluate([passed(80, 82, 5, labelled=True)], now=85.0, pos_scans=[till("soda_can", 82.5)]) == []
    off = RuleEngine({"pass_around": {"late_min_confidence": 1.0}}, list(BASE_ACTIVITIES), scans="pos")
    assert off.evaluate([passed(10, 12, 1, confidence=0.99, labelled=True)], now=15.0) == []


def test_an_item_pass_around_waits_item_read_s_for_a_read_after_it():
    def passed(start, end, track):
        return Event("pass_around", ALL.index("pass_around"), "soda_can", start, end, 0.9, (0.1, 0.2, 0.3, 0.4),
                     ("items",), item=track)

    e = RuleEngine({"pass_around": {}}, list(BASE_ACTIVITIES), scans="pos")
    # let go on the glass at 12 s, read at 12.4 s: the read was its scan
    assert e.evaluate([passed(10, 12, 1)], now=12.2) == [] and e.next_due() == pytest.approx(16.0)
    assert e.evaluate([], now=13.0, pos_scans=[till("soda_can", 12.4)]) == []
    assert e.evaluate([], now=15.0, pos_scans=[till("soda_can", 12.4)]) == [] and e.next_due() is None
    # no read: raised once item_read_s has passed, not before
    assert e.evaluate([passed(30, 32, 2)], now=35.0) == []
    assert [d["product"] for d in e.evaluate([], now=36.0)] == ["soda_can"]
    # handed across the counter over the glass: a hand-over of the product beginning within HANDED_S
    # (1 s) of its end, at any confidence, is that item; another product's, or a later one, is not
    over = Event("hand_over", ALL.index("hand_over"), "soda_can", 52.5, 53.0, 0.2, (0.1, 0.2, 0.3, 0.4), ("items",), item=9)
    assert e.evaluate([passed(50, 52, 3)], now=52.2) == [] and e.evaluate([over], now=53.2) == []
    assert e.evaluate([], now=57.0) == []
    late_over = Event("hand_over", ALL.index("hand_over"), "soda_can", 73.5, 74.0, 0.9, (0.1, 0.2, 0.3, 0.4), ("items",), item=11)
    apple = Event("hand_over", ALL.index("hand_over"), "apple", 92.5, 93.0, 0.9, (0.1, 0.2, 0.3, 0.4), ("items",), item=12)
    assert e.evaluate([passed(70, 72, 10), late_over], now=74.2) == []
    assert [d["start"] for d in e.evaluate([passed(90, 92, 13), apple], now=96.5)] == [70, 90]
    # without the till it waits as long for the scanner light's read of its track or product
    e = RuleEngine({"pass_around": {}}, ALL, scans="vision")

    def light(product, t, track):   # the green light's read of the track over the glass (item_events._flash)
        return Event("scan", ALL.index("scan"), product, t - 1.0, t, 0.8, (0.1, 0.2, 0.3, 0.4), ("items",), item=track,
                     paid=True)

    assert e.evaluate([passed(10, 12, 1)], now=12.2) == [] and e.next_due() == pytest.approx(16.0)
    assert e.evaluate([light("soda_can", 13.0, 1)], now=13.2) == []
    assert e.evaluate([], now=17.0) == []
    # a read of another track and product, or one after item_read_s, does not pay for it
    assert e.evaluate([passed(30, 32, 2), light("apple", 33.0, 5)], now=33.2) == []
    assert [d["start"] for d in e.evaluate([], now=36.0)] == [30]
    assert e.evaluate([passed(50, 52, 3)], now=52.2) == []
    assert [d["start"] for d in e.evaluate([light("soda_can", 56.5, 3)], now=56.6)] == [50]


def test_an_item_the_scanner_lit_red_over_is_judged_as_a_pass_around_with_the_till_only():
    """The labeler names an item set down on the glass after a red light a scan tried, unpaid: with the
    till it waits item_read_s for a read as a pass-around does; without the till the red light says the
    customer showed it to the scanner, and only its bag is judged (by bagged_without_scan)."""
    tried = Event("scan", ALL.index("scan"), "soda_can", 10, 12, 0.9, (0.1, 0.2, 0.3, 0.4), ("items",), item=1)
    paid = Event("scan", ALL.index("scan"), "apple", 30, 32, 0.9, (0.1, 0.2, 0.3, 0.4), ("items",), item=2, paid=True)
    e = RuleEngine({"pass_around": {}}, ALL, scans="pos")
    assert e.evaluate([tried, paid], now=12.2) == []
    assert [d["product"] for d in e.evaluate([], now=16.5)] == ["soda_can"] and e.evaluate([], now=40.0) == []
    e = RuleEngine({"pass_around": {}}, ALL, scans="pos")   # read just after: paid
    assert e.evaluate([tried], now=12.2) == [] and e.evaluate([], now=16.5, pos_scans=[till("soda_can", 12.5)]) == []
    e = RuleEngine({"pass_around": {}}, ALL, scans="vision")
    assert e.evaluate([tried], now=12.2) == [] and e.evaluate([], now=40.0) == []
    # nor does the track labeler's pass-around of that track, when the track ends
    late = Event("pass_around", ALL.index("pass_around"), "soda_can", 10, 12, 0.95, (0.1, 0.2, 0.3, 0.4),
                 ("items", "track_labels"), item=1)
    assert e.evaluate([late], now=41.0) == [] and e.evaluate([], now=50.0) == []


def test_a_bag_under_way_that_would_be_unpaid_nudges_early_once_and_changes_nothing_the_bag_decides():
    def item(activity, product, start, end, track, paid=False, confidence=0.9, entering=False):
        return Event(activity, ALL.index(activity), product, start, end, confidence, (0.1, 0.2, 0.3, 0.4),
                     ("items", "entering") if entering else ("items",), item=track, paid=paid)

    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    under_way = item("bag", "soda_can", 10, 12, 1, entering=True)   # in the bag zone since 12
    # not before nudge_after_s (0.4 s) in the bag zone; then once, early, and only a nudge
    assert e.evaluate([], now=12.2, entering=[under_way]) == []
    drafts = e.evaluate([], now=12.4, entering=[under_way])
    assert [(d["rule"], d["product"], d.get("early")) for d in drafts] == [("bagged_without_scan", "soda_can", True)]
    assert e.evaluate([], now=12.8, entering=[under_way]) == []
    # the bag, when decided, raises its alert as ever
    assert [d.get("early") for d in e.evaluate([item("bag", "soda_can", 10, 13, 1)], now=13.2)] == [None]
    # a till read in the look-back would pay for it: no nudge, and the read still pays for the bag
    e = RuleEngine({"bagged_without_scan": {}}, list(BASE_ACTIVITIES), scans="pos")
    read = [till("apple", 5.0)]
    assert e.evaluate([], now=12.6, pos_scans=read, entering=[item("bag", "apple", 10, 12, 2, entering=True)]) == []
    assert e.evaluate([item("bag", "apple", 10, 13, 2)], now=13.2, pos_scans=read) == []
    # a track scanned itself, one read faintly, one in the bag zone over nudge_within_s (2 s: held there,
    # not let go), and a lane with early_nudge 0 nudge nothing
    for th, entering, now in (({}, item("bag", "apple", 30, 32, 3, paid=True, entering=True), 33.0),
                              ({}, item("bag", "apple", 30, 32, 4, confidence=0.3, entering=True), 33.0),
                              ({}, item("bag", "apple", 30, 32, 7, entering=True), 34.4),
                              ({"early_nudge": 0.0}, item("bag", "apple", 30, 32, 5, entering=True), 33.0)):
        e = RuleEngine({"bagged_without_scan": th}, list(BASE_ACTIVITIES), scans="pos")
        assert e.evaluate([], now=now, entering=[entering]) == []
    # thresholds that leave no time to nudge in are refused in one line
    with pytest.raises(ValueError, match="nudge_after_s .3. must not exceed nudge_within_s .2.") as err:
        RuleEngine({"bagged_without_scan": {"nudge_after_s": 3.0}}, list(BASE_ACTIVITIES), scans="pos")
    assert "\n" not in str(err.value)
    # other rules read no bag under way
    e = RuleEngine({"pass_around": {}}, list(BASE_ACTIVITIES), scans="pos")
    assert e.evaluate([], now=33.0, entering=[item("bag", "apple", 30, 32, 6, entering=True)]) == []


def test_nudges_are_scored_as_the_screen_gets_them_the_first_near_a_target_and_early_ones_apart_from_alerts():
    from tools.accuracy.alerts_eval import nudge_score, score

    def d(product, start, end, early=False):
        return {"rule": "bagged_without_scan", "product": product, "start": start, "end": end,
                **({"early": True} if early else {})}

    want = [("apple", 10.0, 13.0), ("milk_carton", 50.0, 53.0)]
    raised = [(d("apple", 10, 12, early=True), 12.4),     # the apple's early nudge, before its bag ended
              (d("apple", 10, 13), 13.6),                  # then its alert
              (d("milk_carton", 50, 53), 53.8),            # the milk's alert, no early nudge
              (d("bread", 80, 82, early=True), 82.4)]      # an early nudge near no target
    s = nudge_score(raised, want, paid=[])
    assert (s["found"], s["alerts"], s["false"]) == (2, 2, 1)
    assert sorted(round(x, 1) for x in s["latency_s"]) == [-0.6, 0.8]
    a = score(raised, want, paid=[])   # the alerts' own score reads no early nudge
    assert (a["found"], a["alerts"], a["false"]) == (2, 2, 0)
