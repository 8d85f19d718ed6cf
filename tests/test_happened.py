"""What happened in a window (edge_runtime/query/happened.py): the shipped bundle on 5 minutes of a
held-out generator video, through an Engine, a Runtime and a hub alike; events sorted, merged, one
product per activity interval, some of them right against the video's annotations; catalog products
named as the catalog names them; POST /v1/happened and ``lvm-edge happened``; bad input one line,
4xx / exit 2; a heads-only engine refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_runtime import cli
from edge_runtime.checkout import CheckoutVideo
from edge_runtime.engine.engine import Engine
from edge_runtime.query import happened
from edge_runtime.query.class_pictures import class_pictures
from edge_runtime.query.events import Event
from edge_runtime.query.happened import HappenedError, merge, one_activity_each, one_product_each, what_happened
from edge_runtime.serve.api import create_app
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.serve.streams import Streams
from fakes import serve_app

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "engines" / "lvm-tiny-fp32"
SEED, VIDEO_S = 1000042, 300.0  # a held-out generator video (seed never trained on)


@pytest.fixture(scope="module")
def streamed(shipped_engine):
    eng = shipped_engine
    video = CheckoutVideo(seed=SEED, duration_s=VIDEO_S, size=eng.frame_size)
    ts, fr = zip(*video.frames(eng.fps, 0.0, None))
    stream = eng.new_stream()
    eng.ingest(stream, np.stack(fr), np.asarray(ts, np.float64))
    eng.flush(stream)
    return eng, stream, video


def _runtime(streamed, **kw):
    """A Runtime on the streamed engine whose stream starts from the streamed memory."""
    eng, stream, _ = streamed
    rt = Runtime(eng, **kw)
    rt.stream.load_state_dict(stream.state_dict())
    return rt


def _right(e: Event, ann: dict) -> bool:
    product = {i["instance_id"]: i["product"] for i in ann["instances"]}
    for g in ann["events"]:
        inter = min(e.end, g["end"]) - max(e.start, g["start"])
        union = max(e.end, g["end"]) - min(e.start, g["start"])
        if g["activity"] == e.activity and product[g["instance_id"]] == e.product and inter / union > 0.3:
            return True
    return False


def test_events_of_a_window_from_the_bundles_classes(streamed):
    eng, stream, video = streamed
    events = what_happened((eng, stream), None, (0.0, VIDEO_S))
    assert events, "5 minutes of checkout with no event found"
    assert [(e.start, -e.confidence) for e in events] == sorted((e.start, -e.confidence) for e in events)
    for e in events:
        assert 0.0 <= e.start < e.end <= VIDEO_S + 1e-6
        assert happened.MIN_CONFIDENCE <= e.confidence <= 1.0
        assert e.product in eng.products and eng.labels[e.activity_id] == e.activity
        # "items": an item event of the stream's item tracks agrees with it (tests/test_item_queries.py)
        assert e.tracks[0] == "memory" and set(e.tracks) <= {"memory", "timeline", "items"}
        assert e.box is not None and all(0.0 <= v <= 1.0 for v in e.box) and e.box[0] < e.box[2]
    # the same product and activity never twice at overlapping times (merged)
    for a in events:
        for b in events:
            if a is not b and (a.product, a.activity_id) == (b.product, b.activity_id):
                assert a.end + happened.MERGE_GAP_S < b.start or b.end + happened.MERGE_GAP_S < a.start
    right = sum(_right(e, video.annotations()) for e in events)
    assert right >= 2, [e.to_dict() for e in events]  # held-out precision is ~0.5 (docs/lab/accuracy/happened.json)


def test_one_signature_for_engine_runtime_and_hub(streamed):
    eng, stream, _ = streamed
    direct = what_happened((eng, stream), "any name: the stream is the one given", (0.0, 150.0))
    rt = _runtime(streamed)
    assert what_happened(rt, None, (0.0, 150.0)) == direct
    assert what_happened(rt, rt.name, (0.0, 150.0)) == direct
    assert what_happened(Streams.wrap(rt), None, (0.0, 150.0)) == direct
    with pytest.raises(HappenedError, match="not 'cam9'") as err:
        what_happened(rt, "cam9", (0.0, 150.0))
    assert err.value.status == 404


def test_activity_filter_and_confidence_floor(streamed):
    target = streamed[:2]
    every = what_happened(target, None, (0.0, VIDEO_S), min_confidence=0.0)
    scans = what_happened(target, None, (0.0, VIDEO_S), activities=["scan"], min_confidence=0.0)
    assert scans and {e.activity for e in scans} == {"scan"}
    sure = what_happened(target, None, (0.0, VIDEO_S), min_confidence=0.6)
    assert len(every) > len(sure) and all(e.confidence >= 0.6 for e in sure)


@pytest.mark.parametrize("window, activities, words", [
    ((10.0, 5.0), None, "window: start .10. must be before end"),
    ((0.0, float("nan")), None, "finite"),
    ("soon", None, "window must be"),
    ((0.0, 60.0), ["juggle"], "juggle"),
])
def test_bad_input_is_one_line(streamed, window, activities, words):
    with pytest.raises(HappenedError, match=words) as err:
        what_happened(streamed[:2], None, window, activities=activities)
    assert "\n" not in str(err.value) and err.value.status == 422


def test_heads_answers_are_refused():
    with Engine(BUNDLE, threads=1, answers="heads") as heads:
        with pytest.raises(HappenedError, match="memory reader") as err:
            what_happened((heads, heads.new_stream()), None, (0.0, 10.0))
        assert err.value.status == 409


def test_events_keep_pairs_by_the_bundles_one_cut_not_the_answers_status():
    """An answer its query type calls "not seen" (a higher cut) still gives its pair when p(seen) is at
    least the section's 0.5: the event list sifts by confidence, as its floor was chosen with."""
    from types import SimpleNamespace

    eng = SimpleNamespace(reader_section={"not_seen_below": 0.5})
    assert happened.happened_at_all(eng, {"status": "not_seen", "p_seen": 0.6})
    assert not happened.happened_at_all(eng, {"status": "not_seen", "p_seen": 0.4})
    assert not happened.happened_at_all(eng, {"status": "no_memory", "p_seen": None})
    assert happened.happened_at_all(eng, {"status": "answered", "p_seen": 0.5})


def test_merge_and_one_product_each():
    a = Event("scan", 1, "banana", 10.0, 14.0, 0.4, None, ("memory",))
    b = Event("scan", 1, "banana", 14.5, 18.0, 0.7, (0.1, 0.1, 0.2, 0.2), ("timeline",))
    c = Event("scan", 1, "apple", 10.2, 14.1, 0.6)
    d = Event("bag", 2, "apple", 10.2, 14.1, 0.2)
    merged = merge([b, a, c, d])
    assert Event("scan", 1, "banana", 10.0, 18.0, 0.7, b.box, ("memory", "timeline")) in merged
    assert [e.start for e in merged] == sorted(e.start for e in merged)
    kept = one_product_each([a, c, d])  # a and c: one scan at one time; the likelier product keeps it
    assert c in kept and a not in kept and d in kept


def test_one_activity_each_keeps_the_likelier_activity_of_an_item():
    scan = Event("scan", 1, "apple", 10.0, 14.0, 0.8)
    hold = Event("hold", 4, "apple", 11.0, 15.0, 0.6)          # the same item read as a hold: dropped
    bag = Event("bag", 2, "apple", 15.5, 19.0, 0.5)            # next, not at the same time: kept
    other = Event("hold", 4, "banana", 11.0, 15.0, 0.6)        # another product: kept
    kept = one_activity_each([hold, bag, other, scan])
    assert kept == [scan, other, bag]
    # an overlap under the cut is two things one after the other; a cut of 0.7 keeps this pair
    assert hold in one_activity_each([scan, hold], at_least=0.7)
    assert happened.ONE_ACTIVITY_TIOU == 0.3


def test_the_alert_rules_read_every_activitys_reading(streamed):
    """The rules get the events before one_activity_each (replayed with it, they found fewer
    pass-arounds: docs/lab/alerts.md); the list people read gets one activity per product at a time."""
    from edge_runtime.alerts.rule_events import EVENT_FLOOR, rule_events

    from edge_runtime.engine.engine import Engine

    target = streamed[:2]
    # as an engine without an event head lists them: no item events to agree with
    every = what_happened(target, None, (0.0, VIDEO_S), min_confidence=EVENT_FLOOR, one_activity=False, items=False)
    # the shipped bundle's event path: the rules read its item events (tests/test_event_path.py); the
    # same bundle's memory path alone reads what happened
    assert all(e.tracks[0] == "items" for e in rule_events(target, None, (0.0, VIDEO_S)))
    with Engine(target[0].bundle, threads=1, events=False) as memory_only:
        assert rule_events((memory_only, target[1]), None, (0.0, VIDEO_S)) == every
    listed = what_happened(target, None, (0.0, VIDEO_S), min_confidence=EVENT_FLOOR, items=False)
    assert listed == one_activity_each(every) and set(listed) < set(every)  # this window: 16 of 17


def test_catalog_products_are_asked_by_their_names(streamed, tmp_path):
    rt = _runtime(streamed, state_dir=tmp_path)
    pics = class_pictures(["banana", "chips_bag"], 112)
    rt.catalog.add("Bananas", pics["banana"])
    rt.catalog.add("Crisps", pics["chips_bag"])
    events = what_happened(rt, None, (0.0, VIDEO_S), min_confidence=0.0)
    assert events and {e.product for e in events} <= {"Bananas", "Crisps"}


def test_a_product_removed_while_its_pictures_are_read_is_not_asked_about(streamed, tmp_path):
    """Found by a client adding and removing a product while others asked what happened: 404s for a
    product no question named."""
    from edge_runtime.query.happened import subjects

    eng = streamed[0]
    rt = Runtime(eng, state_dir=tmp_path)
    pics = class_pictures(["banana", "chips_bag"], 112)
    rt.catalog.add("Bananas", pics["banana"])
    rt.catalog.add("Crisps", pics["chips_bag"])
    real = rt.catalog.crops

    def crops_then_removed(name):  # "Crisps" is removed between the listing and the reading
        if name == "Crisps":
            rt.catalog.remove("Crisps")
        return real(name)

    rt.catalog.crops = crops_then_removed
    assert list(subjects(eng, rt.catalog)) == ["Bananas"]


# -- API and CLI -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(streamed):
    """A Runtime whose stream was fed the video itself (its OOD monitor saw the frames, which a state
    dict does not carry)."""
    eng, _, video = streamed
    rt = Runtime(eng)
    ts, fr = zip(*video.frames(eng.fps, 0.0, None))
    eng.ingest(rt.stream, np.stack(fr), np.asarray(ts, np.float64))
    eng.flush(rt.stream)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served)) as c:
        yield c


def test_api_answers_as_the_function_does(client, served, streamed):
    r = client.post("/v1/happened", json={"last": 120})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["window"] == [VIDEO_S - 120, VIDEO_S] and body["products"]["from"] == "bundle classes"
    assert body["events"] == [e.to_dict() for e in what_happened(streamed[:2], None, (VIDEO_S - 120, VIDEO_S))]
    assert body["ood"] == served.stream.ood.status()  # as every answer says how unlike training the frames are
    from edge_runtime.cli.happened import lines
    flagged = lines({**body, "ood": {**body["ood"], "flag": True}})
    assert flagged[-1].startswith("warning: the recent frames look unlike the training footage")
    assert not any(x.startswith("warning") for x in lines({**body, "ood": {**body["ood"], "flag": False}}))
    scans = client.post("/v1/happened", json={"start": 0, "end": VIDEO_S, "activity": "scan"}).json()["events"]
    assert scans and {e["activity"] for e in scans} == {"scan"}
    assert "HappenedAnswer" in client.get("/openapi.json").json()["components"]["schemas"]
    assert body["status"] == "answered" and body["coverage"]["covered_fraction"] == 1.0
    # a window the memory covers in part, or not at all, says so, as the query routes do
    part = client.post("/v1/happened", json={"start": VIDEO_S - 60, "end": VIDEO_S + 60}).json()
    assert part["status"] == "partial" and part["coverage"]["end"] == VIDEO_S
    none = client.post("/v1/happened", json={"start": VIDEO_S + 100, "end": VIDEO_S + 400}).json()
    assert none["status"] == "no_memory" and none["events"] == [] and none["coverage"]["covered_fraction"] == 0.0
    assert none["message"].startswith("the memory holds 0.0-") and "none of this window" in none["message"]
    assert "(the memory holds 0.0-" in lines(none)[0]


@pytest.mark.parametrize("body, status, words", [
    ({"start": 0}, 422, "missing field 'end'"),
    ({"start": 0, "end": 10, "last": 5}, 422, "not both"),
    ({"last": -5}, 422, "last"),
    ({"start": 9, "end": 3}, 422, "must be before end"),
    ({"last": 60, "activity": "juggle"}, 422, "juggle"),
    ({"last": 60, "min_confidence": 2}, 422, "min_confidence"),
    ({"last": 60, "stream": "nope"}, 404, "nope"),
    ({"last": 60, "colour": "red"}, 422, "unknown field 'colour'"),
])
def test_api_bad_input_is_4xx_with_one_line(client, body, status, words):
    r = client.post("/v1/happened", json=body)
    assert r.status_code == status and words in r.json()["error"] and "\n" not in r.json()["error"], r.text


def test_api_before_the_first_frame_says_so(shipped_engine):
    with TestClient(create_app(Runtime(shipped_engine))) as c:
        r = c.post("/v1/happened", json={})
        assert r.status_code == 409 and r.json()["error"] == "the memory holds nothing yet (no frames streamed)"
        assert c.post("/v1/happened", json={"start": 0, "end": 60}).json()["events"] == []


def test_cli_happened(client, streamed, capsys):
    with serve_app(create_app(_runtime(streamed))) as where:
        assert cli.main(["happened", "--last", "2m", "--api", where]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(f"default: ") and f"{VIDEO_S - 120:.1f}-{VIDEO_S:.1f} s" in out[0]
        assert len(out) == 1 + int(out[0].split(": ")[1].split()[0])
        assert cli.main(["happened", "--start", "0", "--end", "300", "--activity", "scan", "--json", "--api", where]) == 0
        assert {e["activity"] for e in json.loads(capsys.readouterr().out)["events"]} <= {"scan"}
        assert cli.main(["happened", "--start", str(VIDEO_S + 100), "--end", str(VIDEO_S + 400), "--api", where]) == 0
        assert "nothing in memory for" in capsys.readouterr().out
        assert cli.main(["happened", "--last", "soon", "--api", where]) == 2
        assert cli.main(["happened", "--last", "5m", "--start", "0", "--api", where]) == 2
        assert cli.main(["happened", "--start", "9", "--end", "3", "--api", where]) == 2
        assert cli.main(["happened", "--activity", "juggle", "--api", where]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 4 and "HTTP 422" in err[-1] and "juggle" in err[-1]


# -- ask: questions that name no product ------------------------------------------------------------
def test_ask_what_happened_and_what_was_scanned(client):
    r = client.post("/v1/ask", json={"text": "what happened in the last 2 minutes?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["read_as"] == {"type": "happened", "start": VIDEO_S - 120, "end": VIDEO_S}
    direct = client.post("/v1/happened", json={"start": VIDEO_S - 120, "end": VIDEO_S}).json()
    assert body["answer"] == direct
    o = client.post("/v1/ask", json={"text": "what was scanned in the last 5 minutes"}).json()
    assert o["read_as"]["type"] == "object" and o["answer"]["times"]
    assert o["events"] and {e["activity"] for e in o["events"]} == {"scan"}
    bad = client.post("/v1/ask", json={"text": "was the kombucha scanned?"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("kombucha: not in the catalog")


def test_cli_ask_prints_the_events(streamed, capsys):
    with serve_app(create_app(_runtime(streamed))) as where:
        assert cli.main(["ask", "when was something bagged in the last 5 minutes", "--api", where]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"read as: what happened ('bag', to any product), in the last 5 min (stream 0-{VIDEO_S:g} s)"
        assert "event(s) in 0.0-300.0 s" in out[2] and all(" bag " in line for line in out[3:])


def test_what_happened_needs_no_torch():
    """The runtime never imports torch: neither the events nor the drawn class pictures pull it in."""
    import subprocess
    import sys

    code = ("import sys; import edge_runtime.query.happened, edge_runtime.serve.api_happened; "
            "from edge_runtime.query.class_pictures import class_pictures; "
            "assert class_pictures(['banana'], 32)['banana'][0].shape == (32, 32, 3); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False"], out.stderr


def test_trace_accounts_for_every_missed_truth_event(streamed):
    """--losses of tools/accuracy/happened_eval.py: the trace gives each step's answers, and every truth
    event of the window is either found or lost at exactly one step, the first that lost it."""
    from edge_runtime.query.item_events import covers
    from tools.accuracy.happened_eval import LOSSES, lost_at, matched, truth

    eng, stream, video = streamed
    ann = video.annotations()
    steps: dict = {}
    events = what_happened((eng, stream), None, (0.0, VIDEO_S), trace=steps)
    assert events == what_happened((eng, stream), None, (0.0, VIDEO_S))  # tracing changes nothing
    # the default floor: the memory's own, or the one of intervals no item event confirms
    floors = happened.ITEM_FLOORS[stream.items.labelled_by] if covers(eng, stream, (0.0, VIDEO_S)) else None
    floor = floors.unconfirmed if floors else happened.MIN_CONFIDENCE
    assert set(steps["activity"]) == set(happened.subjects(eng, None)) and steps["floor"] == floor
    assert all(k[4] >= min(floor, floors.confirmed if floors else floor) for k in steps["kept"])
    gt = truth(ann, 0.0, VIDEO_S)
    hit = matched(events, gt)
    assert gt and hit
    lost = [lost_at(steps, g, list(eng.labels), eng) for j, g in enumerate(gt) if j not in hit]
    assert set(lost) <= set(LOSSES)
    # an interval kept past one_product_each but not listed was dropped for another activity of its product
    assert {k[:2] for k in steps["one_product"]} >= {(e.product, e.activity_id) for e in events}
    e = events[0]
    g = (e.activity, e.product, e.start, e.end)
    assert lost_at(steps, g, labels := list(eng.labels), eng) == LOSSES[6]
    assert lost_at({**steps, "one_product": []}, g, labels, eng) == LOSSES[5]
    # a pair the activity step never made a candidate is lost there, whatever its time answer would be
    product = next(iter(steps["activity"]))
    never = {**steps, "time": {k: v for k, v in steps["time"].items() if k[0] != product},
             "activity": {**steps["activity"], product: {**steps["activity"][product], "p_seen": None}}}
    assert lost_at(never, (labels[0], product, 0.0, 10.0), labels, eng) == LOSSES[1]
    gone = {**steps, "activity": {**steps["activity"], product: {"status": "no_memory"}}}
    assert lost_at(gone, (labels[0], product, 0.0, 10.0), labels, eng) == LOSSES[0]


@pytest.mark.slow
def test_happened_eval_counts_the_losses(tmp_path, capsys, monkeypatch):
    from tools.accuracy import happened_eval
    from tools.accuracy.happened_eval import LOSSES, main

    out = tmp_path / "h.json"
    assert main(["--videos", "1", "--video-s", "300", "--losses", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    run, lost = got["runs"][0], got["losses"]
    assert lost["steps"] == list(LOSSES) and lost["truth"] == run["truth"] and lost["found"] == run["found"]
    assert sum(lost["missed_at"].values()) == lost["truth"] - lost["found"]
    assert "missed at" in capsys.readouterr().out
    # a grid's settings are given to what_happened, never written into its module's constants
    shipped = happened.MIN_CONFIDENCE, happened.TOP_ACTIVITIES, happened.EXCLUSIVE, happened.ONE_ACTIVITY_TIOU
    calls = []

    def spy(*args, **kw):
        calls.append(((happened.MIN_CONFIDENCE, happened.TOP_ACTIVITIES, happened.EXCLUSIVE,
                       happened.ONE_ACTIVITY_TIOU), kw.get("min_confidence"), kw.get("one_activity_tiou")))
        return what_happened(*args, **kw)

    monkeypatch.setattr(happened_eval, "what_happened", spy)
    assert main(["--videos", "1", "--video-s", "120", "--window-s", "60", "--floors", "0.6,0.7",
                 "--one-activity", "0.3,0.9"]) == 0
    assert {c[0] for c in calls} == {shipped}
    assert {c[1:] for c in calls} == {(0.6, 0.3), (0.6, 0.9), (0.7, 0.3), (0.7, 0.9), (None, 0.3)}  # None: the default


@pytest.mark.parametrize("argv, words", [(["--floors", "0.5,2"], "each must be in 0..1"),
                                         (["--one-activity", "off,half"], "overlaps in 0..1, or off")])
def test_happened_eval_grid_bad_input_is_one_line(argv, words, capsys):
    from tools.accuracy.happened_eval import main

    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2 and words in capsys.readouterr().err


def test_the_last_minutes_of_a_live_stream_end_now_not_where_the_memory_ends(monkeypatch):
    # a camera out for the last minute: "the last minute" is that minute, which the memory does not cover
    from types import SimpleNamespace

    from edge_runtime.query.ask import times
    from edge_runtime.serve.api_happened import window_of

    monkeypatch.setattr(times.time, "time", lambda: 1_800_000_160.0)
    stream = SimpleNamespace(coverage={"start": 0.0, "end": 100.0})
    live = SimpleNamespace(stream=stream, wall_origin=1_800_000_000.0)
    assert window_of(live, None, None, 60.0) == (100.0, 160.0)
    assert window_of(SimpleNamespace(stream=stream, wall_origin=None), None, None, 60.0) == (40.0, 100.0)


def test_happened_lines_name_the_gaps_of_a_window_covered_in_part():
    from edge_runtime.cli.happened import lines

    reply = {"stream": "default", "window": [100.0, 300.0], "status": "partial", "events": [],
             "coverage": {"start": 100.0, "end": 300.0, "covered_fraction": 0.75},
             "gaps": [[110.2, 124.3], [236.5, 272.4]], "products": {"asked": 3, "from": "catalog"}}
    head = lines(reply)[0]
    assert "75 % of the window" in head and "gaps 110.2–124.3 s, 236.5–272.4 s" in head
