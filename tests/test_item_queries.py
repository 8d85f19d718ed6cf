"""The queries read the item events (edge_runtime/query/item_events.py, item_answers.py, happened.py): small
synthetic item events (no video) through what happened's merge and the object answers; the item
events' horizon (a full ring covers only from its oldest kept event on); every answer says what it read
(read_from), in the API's JSON and the CLI; a window older than the item events is the memory's alone."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.checkout import CheckoutVideo
from edge_runtime.items.item_events import ItemEvent
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.tracker import Track, TrackStep
from edge_runtime.items.zones import Zones, scene_zones
from edge_runtime.query.events import Event
from edge_runtime.query.happened import ITEM_FLOORS, happened, unconfirmed, with_items
from edge_runtime.query.item_answers import SEEN_WITH_ITEMS, from_items
from edge_runtime.query.item_events import covers, horizon, item_events

LABELS = ["pick_up", "scan", "bag", "put_back", "hold", "inspect", "hand_over", "browse"]
PRODUCTS = ["cereal_box", "milk_carton", "soda_can"]
ZONES = Zones(polygons={"scanner": [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6]], "bag": [[0.7, 0.3], [0.9, 0.3], [0.9, 0.7]]})
ENGINE = SimpleNamespace(events=object(), labels=LABELS, products=PRODUCTS,
                         cfg=SimpleNamespace(stream=SimpleNamespace(object_fps=5.0)))


def item(act: str, cls: int, track: int, start: float, end: float, conf: float = 0.7, box=(0.1, 0.2, 0.3, 0.4),
         scanned: float | None = None) -> ItemEvent:
    return ItemEvent(act, LABELS.index(act), cls, track, start, end, conf, box, scanned)


def stream_with(*events: ItemEvent, max_events: int = 8, zones: Zones | None = ZONES) -> SimpleNamespace:
    items = ItemState(zones, bundle_id="b", max_events=max_events)
    items.recent.extend(events)
    return SimpleNamespace(items=items)


def test_a_memory_event_an_item_event_agrees_with_takes_its_item_and_box_and_nothing_else_is_added():
    mem = [Event("bag", 2, "soda_can", 10.0, 14.0, 0.8, (0.5, 0.5, 0.6, 0.6), ("memory", "timeline")),
           Event("scan", 1, "milk_carton", 20.0, 24.0, 0.7, None, ("memory",))]
    state = stream_with(item("bag", 2, 7, 12.0, 15.0, box=(0.7, 0.3, 0.8, 0.4), scanned=None),
                        item("bag", 1, 8, 11.0, 13.0),             # another product at the time: not this event's
                        item("scan", 1, 9, 40.0, 42.0))            # no memory event of it: not listed
    items = item_events(ENGINE, state, (0.0, 60.0), clip=True)
    assert [e.tracks for e in items] == [("items",)] * 3
    got = with_items(mem, items)
    assert len(got) == 2
    bag, scan = got
    assert (bag.start, bag.end, bag.confidence) == (10.0, 14.0, 0.8)          # the memory's times and confidence
    assert bag.item == 7 and bag.box == (0.7, 0.3, 0.8, 0.4) and bag.paid is False
    assert bag.tracks == ("memory", "timeline", "items")
    assert scan == mem[1]                                                        # no item event agrees: as it was
    assert bag.to_dict()["item"] == 7 and "item" not in scan.to_dict()


def test_an_item_event_no_memory_event_agrees_with_is_listed_from_its_floor():
    mem = [Event("bag", 2, "soda_can", 10.0, 14.0, 0.8, None, ("memory",))]
    state = stream_with(item("bag", 2, 7, 12.0, 15.0, conf=0.9),      # the memory's bag: not again
                        item("bag", 1, 8, 30.0, 32.0, conf=0.5),      # no memory event: listed
                        item("bag", 1, 9, 32.5, 34.0, conf=0.6),      # the same product's run: one event
                        item("bag", 0, 10, 40.0, 42.0, conf=0.3),     # under the floor
                        item("pick_up", 0, 11, 50.0, 52.0, conf=0.9))  # which activities: happened()'s ITEM_FLOORS
    items = item_events(ENGINE, state, (0.0, 60.0), clip=True)
    got = unconfirmed(items, mem, None, 0.4)
    own = next(e for e in got if e.activity == "bag")
    assert [(e.activity, e.item) for e in got if e is not own] == [("pick_up", 11)]
    assert (own.activity, own.product, own.start, own.end, own.confidence) == ("bag", "milk_carton", 30.0, 34.0, 0.6)
    assert own.tracks == ("items",) and own.item == 9
    assert unconfirmed(items, mem, {LABELS.index("scan")}, 0.4) == []   # activities not asked for
    assert unconfirmed(items, mem, None, 0.95) == []


def test_item_events_are_cut_to_the_window_and_named_by_class():
    state = stream_with(item("hold", 0, 3, 55.0, 70.0))
    (e,) = item_events(ENGINE, state, (0.0, 60.0), clip=True)
    assert (e.product, e.start, e.end, e.item) == ("cereal_box", 55.0, 60.0, 3)
    assert item_events(ENGINE, state, (0.0, 60.0))[0].end == 70.0


def test_the_item_events_cover_a_window_from_their_horizon_on():
    few = stream_with(item("bag", 0, 1, 5.0, 6.0), max_events=3)
    assert horizon(few.items) == -np.inf and covers(ENGINE, few, (0.0, 60.0))  # nothing dropped yet
    full = stream_with(*(item("bag", 0, i, 10.0 * i, 10.0 * i + 2) for i in range(5)), max_events=3)
    assert horizon(full.items) == 22.0                                          # the oldest kept event's end
    assert not covers(ENGINE, full, (0.0, 60.0)) and covers(ENGINE, full, (22.0, 60.0))
    assert not covers(SimpleNamespace(**{**vars(ENGINE), "events": None}), few, (0.0, 60.0))  # no event head
    assert not covers(ENGINE, stream_with(zones=None), (0.0, 60.0))            # zones still being proposed
    assert not covers(ENGINE, SimpleNamespace(items=None), (0.0, 60.0))


def _live_track(state, track_id: int, times) -> None:
    """A track seen at ``times``, its box drifting, through the stream's tracker and paths."""
    tr = Track(track_id, times[0], times[-1])
    for t in times:
        tr.add(t, np.array([0.2, 0.2, 0.3, 0.3]) + 0.001 * t, 0.9, 2, 0.9)
        state.items.paths.update(TrackStep(t, [tr], {track_id: 0}, []))
    state.items.tracker.restore([tr], track_id + 1)


def test_an_object_answer_takes_the_boxes_of_the_item_track_it_agrees_with():
    req = {"type": "object", "activity": LABELS.index("bag"), "start": 0.0, "end": 60.0, "fps": 5.0}
    frames = [round(9.0 + 0.2 * i, 3) for i in range(31)]                   # the reader's, 9-15 s
    mine = {"times": frames, "boxes": [[0.5, 0.5, 0.6, 0.6]] * 31}
    answer = {"type": "object", "answered_by": "reader", "status": "answered", "extent": [9.0, 15.0, 0.8],
              **mine, "tracks": [{**mine, "extent": [9.0, 15.0, 0.8]}, {"times": [30.0], "boxes": [[0.1] * 4]}],
              "read_from": ["memory", "timeline"], "confidence": 0.8}
    state = stream_with(item("bag", 2, 4, 11.0, 13.0))
    _live_track(state, 4, [10.0 + 0.2 * i for i in range(25)])  # 10.0-14.8 s at 5 fps
    got = from_items(ENGINE, state, req, answer)
    assert got["item"] == 4 and got["read_from"] == ["memory", "timeline", "items"]
    assert got["times"] == frames[5:30] and got["boxes"][0] == [0.21, 0.21, 0.31, 0.31]  # where the track was
    assert got["tracks"][0]["times"] == got["times"] and got["tracks"][0]["boxes"] == got["boxes"]
    assert got["tracks"][1] == answer["tracks"][1]
    assert (got["extent"], got["confidence"], got["status"]) == (answer["extent"], 0.8, "answered")  # the reader's
    bare = {k: v for k, v in answer.items() if k not in ("times", "boxes", "tracks")}
    assert from_items(ENGINE, state, {**req, "fps": 1.0}, bare)["times"] == [10.0, 11.0, 12.0, 13.0, 14.0]
    # its path gone: the item is named, the reader's boxes stay
    gone = stream_with(item("bag", 2, 4, 11.0, 13.0))
    assert from_items(ENGINE, gone, req, answer) == {**answer, "item": 4, "read_from": ["memory", "timeline", "items"]}
    # no item event of the activity in the extent, a time answer, a "not seen": the reader's answer as it was
    assert from_items(ENGINE, stream_with(item("bag", 2, 4, 30.0, 33.0)), req, answer) is answer
    assert from_items(ENGINE, state, {**req, "activity": LABELS.index("scan")}, answer) is answer
    assert from_items(ENGINE, state, {**req, "type": "time"}, {**answer, "type": "time"})["read_from"] == answer["read_from"]
    assert from_items(ENGINE, state, req, {**answer, "status": "not_seen"})["read_from"] == answer["read_from"]
    # inspections keep the reader's boxes (BOXES_FROM_READER), naming the item
    state.items.recent.append(item("inspect", 2, 4, 11.0, 13.0))
    looked = from_items(ENGINE, state, {**req, "activity": LABELS.index("inspect")}, answer)
    assert looked["item"] == 4 and looked["boxes"] == answer["boxes"]


def _judged(qtype: str, status: str, p_seen: float, **extra) -> dict:
    return {"type": qtype, "answered_by": "reader", "status": status, "p_seen": p_seen, "confidence": 0.5,
            "read_from": ["memory", "timeline"], **extra}


def test_an_activity_answer_is_seen_when_an_item_track_of_the_product_was_handled():
    req = {"type": "activity", "start": 0.0, "end": 60.0}
    lo = SEEN_WITH_ITEMS
    missed = _judged("activity", "not_seen", lo + 0.05, scores=[["bag", 0.4]], message="no evidence")
    state = stream_with(item("bag", 2, 4, 11.0, 13.0))
    got = from_items(ENGINE, state, req, missed, "soda_can")
    assert got["status"] == "answered" and "message" not in got and got["read_from"][-1] == "items"
    assert got["seen_by"].startswith("an item track") and got["scores"] == missed["scores"]
    part = from_items(ENGINE, state, req, {**missed, "answered_spans": [[0.0, 30.0]]}, "soda_can")
    assert part["status"] == "partial"
    assert from_items(ENGINE, state, req, missed, "milk_carton")["status"] == "not_seen"      # another product's
    assert from_items(ENGINE, state, req, {**missed, "p_seen": lo - 0.05}, "soda_can")["status"] == "not_seen"
    assert from_items(ENGINE, state, req, missed)["status"] == "not_seen"                    # no class named


def test_a_product_asked_by_its_class_name_is_judged_with_the_item_tracks():
    from edge_runtime.query import by_product

    runtime = SimpleNamespace(engine=SimpleNamespace(**vars(ENGINE), frame_size=112), catalog=None,
                              stream=stream_with(item("bag", 2, 4, 11.0, 13.0)))
    flat, finish = by_product.prepare(runtime, [{"type": "activity", "start": 0.0, "end": 60.0, "product": "Soda Can"}])
    assert len(flat) >= 1 and all("product" not in r for r in flat)                 # asked by the class's pictures
    missed = _judged("activity", "not_seen", SEEN_WITH_ITEMS + 0.1, scores=[0.1] * len(LABELS), message="no evidence")
    (got,) = finish([dict(missed) for _ in flat])
    assert got["status"] == "answered" and got["product"]["name"] == "soda_can" and "items" in got["read_from"]


def test_the_cli_says_what_an_answer_read():
    from edge_runtime.cli.answer_text import answer_text
    from edge_runtime.cli.happened import lines

    cov = {"coverage": {"start": 0.0, "end": 60.0, "covered_fraction": 1.0}, "gaps": [], "status": "answered"}
    a = {"type": "object", "window": [0, 60], "extent": [10.0, 14.0, 0.8], "times": [12.0], "boxes": [[0.1] * 4],
         "read_from": ["memory", "items"], "item": 4, **cov}
    assert "read from: memory, items (item 4)" in answer_text(a).splitlines()
    seen = {"type": "activity", "window": [0, 60], "status": "answered", "confidence": 0.4, "p_seen": 0.45,
            "scores": {"bag": 0.6}, "labels": ["bag"], "seen_by": "an item track of the product was handled in the window",
            "read_from": ["memory", "items"], **{k: v for k, v in cov.items() if k != "status"}}
    assert "seen: an item track of the product was handled in the window" in answer_text(seen).splitlines()
    reply = {"stream": "default", "window": [0.0, 60.0], "products": {"asked": 3, "from": "bundle classes"},
             "events": [{**Event("bag", 2, "soda_can", 10.0, 14.0, 0.8, None, ("memory", "items"), item=4).to_dict()}],
             "read_from": ["items", "memory"], **cov}
    out = lines(reply)
    assert "read from items, memory" in out[0] and out[1].endswith("item 4")


# -- what happened on the shipped bundle's memory, with synthetic item events -------------------------
VIDEO_S = 60.0


@pytest.fixture(scope="module")
def streamed(shipped_engine):
    eng = shipped_engine
    video = CheckoutVideo(seed=1000042, duration_s=VIDEO_S, size=eng.frame_size)
    ts, fr = zip(*video.frames(eng.fps, 0.0, None))
    stream = eng.new_stream()
    stream.set_zones(scene_zones(video))
    eng.ingest(stream, np.stack(fr), np.asarray(ts, np.float64))
    eng.flush(stream)
    stream.items.flush()  # no live track: the item events read are the ring's, which the tests set
    memory = happened((eng, stream), None, (0.0, VIDEO_S), min_confidence=0.0, items=False)
    assert memory.events and "items" not in memory.read_from
    return eng, stream, memory


def _agreeing(eng, e: Event, track: int) -> ItemEvent:
    return ItemEvent(e.activity, e.activity_id, eng.products.index(e.product), track, e.start, e.end, 0.9,
                     (0.11, 0.22, 0.33, 0.44), None)


def test_what_happened_says_it_read_the_item_events_and_takes_their_items(streamed):
    eng, stream, memory = streamed
    first = memory.events[0]
    stream.items.recent.clear()
    stream.items.recent.append(_agreeing(eng, first, 77))
    got = happened((eng, stream), None, (0.0, VIDEO_S), min_confidence=0.0)
    assert got.read_from[0] == "items" and got.read_from[1:] == memory.read_from
    assert [(e.activity, e.product, e.start, e.end) for e in got.events] == \
           [(e.activity, e.product, e.start, e.end) for e in memory.events]
    mine = [e for e in got.events if e.item == 77]
    assert mine and mine[0].box == (0.11, 0.22, 0.33, 0.44) and "items" in mine[0].tracks


def test_a_memory_interval_under_the_floor_is_kept_when_an_item_event_confirms_it(streamed):
    eng, stream, memory = streamed
    e = memory.events[0]
    floor, confirmed = e.confidence + 0.01, e.confidence - 0.01

    def listed(**kw):
        got = happened((eng, stream), None, (0.0, VIDEO_S), min_confidence=floor, confirmed_floor=confirmed, **kw)
        return [x for x in got.events if (x.activity, x.product, x.start) == (e.activity, e.product, e.start)]

    stream.items.recent.clear()
    assert listed() == []                                        # no item event agrees: under the floor
    stream.items.recent.append(_agreeing(eng, e, 77))
    (kept,) = listed()
    assert kept.confidence == e.confidence and kept.item == 77   # the memory's confidence, the item's id
    assert listed(items=False) == []                             # the memory alone keeps its floor
    asked = happened((eng, stream), None, (0.0, VIDEO_S), min_confidence=floor).events
    assert all(x.confidence >= floor for x in asked)             # a floor asked for alone is every event's
    with pytest.raises(ValueError, match="confirmed_floor must be in 0..1"):
        happened((eng, stream), None, (0.0, VIDEO_S), confirmed_floor=1.5)
    stream.items.recent.clear()


@pytest.mark.parametrize("source", ["track_labels", "geometric"])
def test_what_happened_lists_an_item_event_no_memory_event_agrees_with_from_its_floor(streamed, source, monkeypatch):
    eng, stream, memory = streamed
    assert stream.items.labelled_by == "track_labels"                # the shipped bundle has the track labeler
    monkeypatch.setattr(type(stream.items), "labelled_by", property(lambda self: source))
    floors = ITEM_FLOORS[source]
    seen = {(e.activity, e.product) for e in memory.events}
    cls = next(i for i, p in enumerate(eng.products) if ("bag", p) not in seen and ("pick_up", p) not in seen)
    conf = round(floors.listed_floor + 0.05, 2)
    stream.items.recent.clear()
    stream.items.recent.extend([item("bag", cls, 55, 30.0, 32.0, conf=conf), item("pick_up", cls, 56, 20.0, 22.0, conf=conf)])

    def own(**kw):
        got = happened((eng, stream), None, (0.0, VIDEO_S), **kw).events
        return [(e.activity, e.product, e.start, e.end, e.tracks, e.item) for e in got if e.item in (55, 56)]

    listed = own()
    assert ("bag", eng.products[cls], 30.0, 32.0, ("items",), 55) in listed
    # the geometric labeler's pick-ups were too often wrong to list on their own; the track labeler's are listed
    assert any(x[0] == "pick_up" for x in listed) == ("pick_up" in floors.listed)
    assert own(min_confidence=conf + 0.04) == []                 # a floor asked for is its floor too
    assert own(items=False) == []
    stream.items.recent.clear()


def test_a_window_older_than_the_item_events_is_the_memorys(streamed):
    eng, stream, memory = streamed
    first = memory.events[0]
    ring = stream.items.recent
    ring.clear()
    ring.append(_agreeing(eng, first, 77))
    # the ring fills up with later events: the oldest kept one ends after the window starts
    ring.extend(item("hold", 0, 100 + i, first.end + 1.0, first.end + 2.0) for i in range(ring.maxlen))
    assert horizon(stream.items) == first.end + 2.0
    got = happened((eng, stream), None, (0.0, VIDEO_S), min_confidence=0.0)
    assert got.read_from == memory.read_from and got.events == memory.events
    ring.clear()


def test_the_api_answer_says_what_it_read(streamed):
    from fastapi.testclient import TestClient

    from edge_runtime.serve.api import create_app
    from edge_runtime.serve.pipeline import Runtime

    eng, stream, memory = streamed
    stream.items.recent.clear()
    stream.items.recent.append(_agreeing(eng, memory.events[0], 77))
    rt = Runtime(eng)
    rt.stream.set_zones(stream.items.zones)
    rt.stream.load_state_dict(stream.state_dict())
    stream.items.recent.clear()
    try:
        with TestClient(create_app(rt)) as c:
            body = c.post("/v1/happened", json={"start": 0, "end": VIDEO_S, "min_confidence": 0.0}).json()
            assert body["read_from"][0] == "items" and "memory" in body["read_from"]
            assert any(e.get("item") == 77 and "items" in e["tracks"] for e in body["events"]), body["events"]
            q = c.post("/v1/query/time", json={"start": 0, "end": VIDEO_S, "activity": "scan",
                                               "product": "milk_carton"}).json()
            assert q["read_from"] and set(q["read_from"]) <= {"memory", "timeline"}
    finally:
        rt.close()


def test_a_product_asked_by_pictures_is_judged_by_the_identity_of_the_item_tracks():
    """A product without a bundle class (a picture, a catalog entry): an item event counts when its track's
    identity matches the pictures at IDENTITY_MATCH or more (here a picture's identity is its first pixels)."""
    from edge_runtime.query import by_product
    from edge_runtime.query.item_answers import IDENTITY_MATCH

    def picture_identities(images):
        rows = np.stack([np.asarray(im, np.float32).reshape(-1)[:4] for im in images])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    engine = SimpleNamespace(**vars(ENGINE), frame_size=112, picture_identities=picture_identities)
    state = stream_with(item("bag", 2, 4, 11.0, 13.0), item("scan", 0, 5, 20.0, 21.0))
    state.items.embed_dim = 4
    state.items.identities.ended.update({4: np.array([1, 0, 0, 0], np.float32), 5: np.array([0, 1, 0, 0], np.float32)})
    pic_4 = np.zeros((2, 2, 3), np.uint8)
    pic_4.reshape(-1)[:4] = [200, 10, 0, 0]   # near track 4's identity (cosine 0.999)
    pic_none = np.zeros((2, 2, 3), np.uint8)
    pic_none.reshape(-1)[:4] = [100, 100, 0, 250]  # cosine 0.35 with each: under the match
    assert 0.35 < IDENTITY_MATCH < 0.999
    req = {"type": "activity", "start": 0.0, "end": 60.0}
    missed = _judged("activity", "not_seen", SEEN_WITH_ITEMS + 0.1, scores=[0.1] * len(LABELS), message="no evidence")
    for pic, want in ((pic_4, "answered"), (pic_none, "not_seen")):
        runtime = SimpleNamespace(engine=engine, catalog=None, stream=state)
        flat, finish = by_product.prepare(runtime, [{**req, "object_image": pic}])
        (got,) = finish([dict(missed)])
        assert got["status"] == want
    assert from_items(engine, state, {**req, "start": 30.0}, missed, None, [pic_4])["status"] == "not_seen"  # none there
    no_identity = SimpleNamespace(**vars(ENGINE), frame_size=112, picture_identities=lambda images: None)
    assert from_items(no_identity, state, req, missed, None, [pic_4])["status"] == "not_seen"
