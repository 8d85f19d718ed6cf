"""The event path's runtime side (edge_runtime/items): zones, item tracks, item events and a stream's
item state, on oracle detections from short stretches of one generator video (no bundle)."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from edge_runtime.checkout import CheckoutVideo, heldout_video
from edge_runtime.checkout.shrink import pos_scans
from edge_runtime.items.detections import Detections, from_frame_labels
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.zones import Zones, propose, scene_zones

FPS = 5.0
# heldout_video(0, 0) with many unscanned items: item 0 is bagged straight from the basket (27.5-31.5 s),
# item 1 picked up, passed around the scanner (40.9-44.4 s) and bagged (45.7-48.6 s); in the next
# session item 3 is scanned (232.2-235.8 s, green light at 234.9 s) and bagged (237.1-241.0 s)
FIRST, SECOND = (18.0, 56.0), (228.0, 246.0)


@pytest.fixture(scope="module")
def video():
    seed, look = heldout_video(0, 0)
    return CheckoutVideo(seed, 300, look=look, shrink="0.3,0.3,0.1")


def run(video, span, state=None, *, jitter=0.03, miss=0.05, light=True, till=()):
    """-> (state, events, {track id: Counter of instances})."""
    state = state or ItemState(scene_zones(video), bundle_id="b1")
    rng = np.random.default_rng(0)
    reads = sorted(till)
    events, owners = [], defaultdict(Counter)
    for k in range(int(span[0] * FPS), int(span[1] * FPS)):
        t = k / FPS
        while reads and reads[0] <= t:
            state.till_read(reads.pop(0), None)
        labels = video.frame_labels(t)
        d = from_frame_labels(labels if light else {**labels, "scanner_flash": None}, jitter=jitter, miss=miss, rng=rng)
        events += state.update(d)
        for tid, i in state.tracker.last_seen.items():
            owners[tid][int(d.instance_ids[i])] += 1
    return state, events, owners


# a counter beside a bag, side by side (normalised image coordinates)
COUNTER_BAG = {"counter": [[0, 0.3], [0.6, 0.3], [0.6, 0.9], [0, 0.9]], "bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]}


def _square(k, x, size, held):
    """Frame k's one detection: a soda can (3), a square of ``size`` at (x, 0.5), held or not."""
    box = np.array([[x, 0.5, x + size, 0.5 + size]], np.float32)
    return Detections(k / FPS, box, np.array([0.8]), np.array([3]), np.full(1, held, np.float32))


def by_instance(events, owners):
    return {(e.activity, owners[e.track_id].most_common(1)[0][0]): e for e in events}


@pytest.mark.parametrize("polygons, words", [
    ({"scanner": [[0.1, 0.1], [0.5, 0.1]]}, "zone 'scanner': a polygon needs at least 3 points, got 2"),
    ({"bag": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.6]]}, "zone 'bag': every point must lie in [0, 1]"),
    ({"till": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.6]]}, "zone 'till' is not one of basket, scanner, counter, bag, light"),
])
def test_a_bad_zone_is_refused_in_one_line_naming_it(polygons, words):
    with pytest.raises(ValueError) as e:
        Zones.from_dict(polygons)
    assert str(e.value).startswith(words) and "\n" not in str(e.value)


def test_zones_round_trip_as_plain_data_and_tell_where_a_point_is():
    z = Zones.from_dict({"basket": [[0, 0.5], [0.4, 0.5], [0.4, 1], [0, 1]],
                         "scanner": [[0.4, 0.2], [0.6, 0.2], [0.6, 0.5], [0.4, 0.5]]})
    assert Zones.from_dict(z.to_dict()) == z
    assert (z.zone_of(0.2, 0.7), z.zone_of(0.5, 0.3), z.zone_of(0.9, 0.1)) == ("basket", "scanner", None)


def test_zones_are_proposed_from_the_heads_zone_map():
    grid = 16
    p = np.zeros((grid, grid, 5), np.float32)
    p[..., 0] = 0.9
    p[4:8, 6:12] = [0.1, 0.0, 0.8, 0.1, 0.0]      # scanner: rows 4-7, columns 6-11
    p[1:2, 1:2] = [0.1, 0.0, 0.0, 0.0, 0.9]       # one bag cell apart from the larger bag region
    p[10:14, 12:16] = [0.1, 0.0, 0.0, 0.0, 0.9]
    z = propose(p.reshape(grid * grid, 5), grid)
    assert set(z.polygons) == {"scanner", "bag"}
    assert z.zone_of(9 / 16, 6 / 16) == "scanner" and z.zone_of(14 / 16, 12 / 16) == "bag"
    assert z.zone_of(1.5 / 16, 1.5 / 16) is None and z.zone_of(3 / 16, 6 / 16) is None


def test_one_track_follows_an_item_from_the_basket_over_the_scanner_into_the_bag(video):
    _, _, owners = run(video, FIRST)
    tracks_of_item_1 = [tid for tid, c in owners.items() if c[1]]
    assert len(tracks_of_item_1) == 1 and owners[tracks_of_item_1[0]].most_common(1)[0][0] == 1


def test_a_scan_a_pass_around_and_bags_are_told_apart(video):
    _, first, owners1 = run(video, FIRST)
    got1 = by_instance(first, owners1)
    assert {"pass_around", "bag"} <= {a for a, i in got1 if i == 1} and ("scan", 1) not in got1
    assert ("bag", 0) in got1 and got1[("bag", 0)].scanned_at is None and got1[("bag", 1)].scanned_at is None
    assert 45.0 <= got1[("bag", 1)].start <= 46.5 and 48.0 <= got1[("bag", 1)].end <= 49.0
    _, second, owners2 = run(video, SECOND)
    got2 = by_instance(second, owners2)
    assert ("scan", 3) in got2 and ("pass_around", 3) not in got2
    assert got2[("bag", 3)].scanned_at == pytest.approx(got2[("scan", 3)].scanned_at)
    assert 234.5 <= got2[("scan", 3)].scanned_at <= 235.3


def test_a_till_read_scans_the_item_the_head_saw_no_light_for(video):
    read = [t for _, t in pos_scans(video.annotations()) if SECOND[0] <= t < SECOND[1]]
    _, dark, owners = run(video, SECOND, light=False)
    assert ("scan", 3) not in by_instance(dark, owners) and by_instance(dark, owners)[("bag", 3)].scanned_at is None
    _, lit, owners = run(video, SECOND, light=False, till=read)
    got = by_instance(lit, owners)
    assert ("scan", 3) in got and got[("bag", 3)].scanned_at == pytest.approx(read[0])


def test_a_snapshot_restores_tracks_and_events_and_refuses_another_bundle(video):
    whole, events, _ = run(video, FIRST)
    half, before, _ = run(video, (FIRST[0], 43.0))
    sd = half.state_dict()
    restored = ItemState(scene_zones(video), bundle_id="b1")
    restored.load_state_dict(sd, "b1")
    assert restored.events((0, 1e9)) == half.events((0, 1e9))
    _, after, _ = run(video, (43.0, FIRST[1]), restored)
    assert [(e.activity, e.track_id) for e in before + after] == [(e.activity, e.track_id) for e in events]
    # where each item went, across the snapshot: the paths go on, a track live at the cut in one path
    assert list(restored.paths.rows)[: len(half.paths.rows)] == list(half.paths.rows)
    live = {tr.track_id for tr in half.tracker.tracks}
    assert live and any(r[0] in live and r[1] > 43.0 for r in restored.paths.rows)
    other = ItemState(scene_zones(video), bundle_id="b2")
    with pytest.raises(ValueError, match="snapshot is of bundle 'b1', this stream runs 'b2'"):
        other.load_state_dict(sd, "b2")


def test_the_state_stays_within_its_byte_bound():
    zones = Zones.from_dict({"bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]})
    state = ItemState(zones, bundle_id="b", max_tracks=8, max_events=4)
    rng = np.random.default_rng(0)
    for k in range(400):  # 40 scattered items a frame, most held into the bag and gone
        xy = rng.random((40, 2)) * 0.9
        boxes = np.concatenate([xy, xy + 0.05], 1)
        held = (rng.random(40) < 0.5).astype(np.float32)
        state.update(Detections(k / FPS, boxes, np.ones(40), rng.integers(0, 20, 40), held))
    assert len(state.tracker.tracks) <= 8 and len(state.recent) <= 4
    assert 0 < state.nbytes() <= state.max_nbytes()


def test_a_bag_is_named_by_the_carry_into_the_bag_not_by_what_lingers_there():
    """The head often reads the bag's contents, or the hand lingering over it, as another product for a
    second or two after the item went in: the bag names what was carried in, across a snapshot too."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")

    def frame(k, x, class_id, score):
        box = np.array([[x, 0.5, x + 0.1, 0.6]], np.float32)
        return Detections(k / FPS, box, np.array([score], np.float32), np.array([class_id]), np.ones(1, np.float32))

    events = []
    for k in range(8):  # soda (2) carried across the counter into the bag
        events += state.update(frame(k, 0.2 + 0.06 * k, 2, 0.6))
    sd = state.state_dict()
    state = ItemState(zones, bundle_id="b")
    state.load_state_dict(sd, "b")
    for k in range(8, 24):  # then read as bread (8), more surely, where it lies in the bag
        events += state.update(frame(k, 0.66, 8, 0.9))
    for k in range(24, 40):  # gone
        events += state.update(Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int),
                                          np.zeros(0)))
    bags = [e for e in events if e.activity == "bag"]
    assert [e.class_id for e in bags] == [2]
    assert state.tracker.tracks == [] and 0 < state.nbytes() <= state.max_nbytes()


def test_a_held_item_gone_two_frames_in_the_bag_zone_is_bagged_then():
    """The bag is decided 0.4 s after the held item's last detection in the bag zone, not when its track
    ends (2 s): the alert's latency starts there."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")
    none = (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
    decided = {}
    for k in range(16):    # carried across the counter into the bag (last seen at k = 9, 1.8 s), then gone
        x = 0.2 + 0.06 * k
        d = (Detections(k / FPS, np.array([[x, 0.5, x + 0.1, 0.6]], np.float32), np.array([0.8]), np.array([3]),
                        np.ones(1, np.float32)) if k < 10 else Detections(k / FPS, *none))
        for e in state.update(d):
            decided[e.activity] = k / FPS
    assert decided == {"bag": pytest.approx(2.2)}


@pytest.mark.parametrize("in_bag, decided_at", [(0.08, 3.2),     # let go: smaller, still: bagged as it settles
                                                 (0.12, 6.4)])    # held up over the bag as large: when it goes
def test_an_item_let_go_in_the_bag_is_bagged_as_it_settles_not_when_it_goes_unseen(in_bag, decided_at):
    """The head reads an item lying in the bag as still held, its box put, until the hand leaves: a held
    item gone smaller than it was at rest and in the hand, whose box stays put two frames running in the
    bag zone, is bagged then (once: not again when its track ends); one held there as large is not."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")

    frames = [_square(k, 0.2, 0.1, 0.0) for k in range(5)]                                  # at rest on the counter
    frames += [_square(k, 0.2 + 0.06 * (k - 5), 0.12, 1.0) for k in range(5, 13)]            # lifted, carried to the bag
    frames += [_square(k, 0.68, in_bag, 1.0) for k in range(13, 31)]                         # in the bag, put
    frames += [Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
               for k in range(31, 46)]
    decided = []
    for k, d in enumerate(frames):
        if k == 20:   # a snapshot between: the item stays bagged
            sd = state.state_dict()
            state = ItemState(zones, bundle_id="b")
            state.load_state_dict(sd, "b")
        decided += [(e.activity, k / FPS, e.start) for e in state.update(d)]
    assert decided == [("bag", pytest.approx(decided_at), pytest.approx(1.0))]


def test_an_item_carried_into_the_bag_zone_and_held_there_at_one_size_is_not_bagged_as_it_settles():
    """Settling counts only after the item shrank in the last 1.8 s (going down into the bag): one lifted high
    early in its handling, then carried in and held over the bag at one size, is bagged only when it goes
    unseen there, not while it is held (a hold over the bag)."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")
    frames = [_square(k, 0.2, 0.1, 0.0) for k in range(5)]                                   # at rest on the counter
    frames += [_square(k, 0.2, 0.14, 1.0) for k in range(5, 8)]                                # lifted up close
    frames += [_square(k, 0.2 + 0.04 * (k - 8), 0.085, 1.0) for k in range(8, 20)]             # carried to the bag
    frames += [_square(k, 0.68, 0.085, 1.0) for k in range(20, 39)]                            # held over it, put
    frames += [Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
               for k in range(39, 50)]
    decided = [(e.activity, d.t) for d in frames for e in state.update(d)]
    assert decided == [("bag", pytest.approx(40 / FPS))]   # 0.4 s after its last sight, at 38 / FPS


def test_an_item_held_over_the_bag_zone_for_seconds_is_not_bagged_as_it_settles():
    """A bag goes down into the bag within seconds of reaching its zone: an item held over the bag zone
    for 5 s (a hold, often taken back to the scanner after) that then goes down and lies still is bagged
    only when it goes unseen there, not as it settles."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")
    frames = [_square(k, 0.2, 0.1, 0.0) for k in range(5)]                                  # at rest on the counter
    frames += [_square(k, 0.2 + 0.06 * (k - 5), 0.12, 1.0) for k in range(5, 13)]            # carried to the bag zone
    frames += [_square(k, 0.64 + 0.02 * (k % 3), 0.12, 1.0) for k in range(13, 38)]          # held over it, moving
    frames += [_square(k, 0.68, 0.08, 1.0) for k in range(38, 48)]                           # down, lying still
    frames += [Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
               for k in range(48, 60)]
    decided = [(e.activity, d.t) for d in frames for e in state.update(d)]
    assert decided == [("bag", pytest.approx(49 / FPS))]   # 0.4 s after its last sight, at 47 / FPS


def test_an_item_gone_into_the_bag_then_lifted_there_and_lost_again_is_one_bag():
    """The gone path bags a held item lost in the bag zone; the same track seen lifted there again and lost
    again (an item inspected or held over the bag) is that bag still, not a second one."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")
    gone = lambda k: Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
    frames = [_square(k, 0.2, 0.1, 0.0) for k in range(5)]                                  # at rest on the counter
    frames += [_square(k, 0.2 + 0.06 * (k - 5), 0.12, 1.0) for k in range(5, 13)]            # carried to the bag zone
    frames += [gone(k) for k in range(13, 16)]                                               # lost there: bagged
    frames += [_square(k, 0.64 + 0.02 * (k % 3), 0.12, 1.0) for k in range(16, 26)]          # lifted there again
    frames += [gone(k) for k in range(26, 40)]                                               # lost again
    decided = [(e.activity, d.t) for d in frames for e in state.update(d)]
    assert decided == [("bag", pytest.approx(15 / FPS))]   # its first loss only (last seen at 12 / FPS)


@pytest.mark.parametrize("columns", [12, 13, 14])   # before the "bagged" column, the "picked" one, "red_t"
def test_a_snapshot_from_before_the_newer_handling_columns_loads(columns):
    state = ItemState(scene_zones(CheckoutVideo(1, 10)), bundle_id="b")
    sd = state.state_dict()
    sd["items.handling"] = np.zeros((1, columns))   # one track's handling, as snapshots kept it before
    state.load_state_dict(sd, "b")
    h = state.labeler.state[0]
    assert h.bagged is False and h.picked is False and h.red_t is None


def test_a_green_light_scans_the_item_seen_over_the_scanner_even_when_the_hand_hides_it_then():
    zones = Zones.from_dict({"counter": [[0, 0.3], [0.4, 0.3], [0.4, 0.9], [0, 0.9]],
                             "scanner": [[0.4, 0.3], [0.6, 0.3], [0.6, 0.9], [0.4, 0.9]],
                             "bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]})
    state = ItemState(zones, bundle_id="b")
    none = (np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))

    def at(k, x=None, light=None):
        if x is None:
            return Detections(k / FPS, *none, light)
        return Detections(k / FPS, np.array([[x, 0.5, x + 0.1, 0.6]], np.float32), np.array([0.8]), np.array([3]),
                          np.ones(1, np.float32), light)

    events = []
    for k in range(5):                       # carried onto the glass and held there
        events += state.update(at(k, 0.2 + 0.06 * k))
    for k in range(5, 10):
        events += state.update(at(k, 0.44))
    for k in range(10, 13):                  # hidden by the hand; the light flashes at 2.2 s
        now = state.update(at(k, light="green" if k == 11 else None))
        if k == 11:   # the read is a scan of that track at once, not when its handling ends
            assert [(e.activity, e.scanned_at) for e in now] == [("scan", pytest.approx(2.2))]
            assert state.scanned == {now[0].track_id: pytest.approx(2.2)}
        events += now
    for k in range(13, 25):                  # seen again, carried into the bag, gone
        events += state.update(at(k, min(0.44 + 0.05 * (k - 13), 0.8)) if k < 21 else at(k))
    bags = [e for e in events if e.activity == "bag"]
    assert len(bags) == 1 and bags[0].scanned_at == pytest.approx(2.2) and not any(e.track_id == -1 for e in events)
    assert {e.track_id for e in events} == {bags[0].track_id}
    # read, then lost in the hand before it was set down: its scan was decided at the read all the same
    lost = ItemState(zones, bundle_id="b")
    got = [e for k in range(10) for e in lost.update(at(k, 0.44, light="green" if k == 6 else None))]
    got += [e for k in range(10, 40) for e in lost.update(at(k))]
    assert [(e.activity, e.scanned_at) for e in got] == [("scan", pytest.approx(1.2))]
    # a flash with no item seen over the scanner is still a scan, of an item no track names
    alone = ItemState(zones, bundle_id="b")
    out = [e for k in range(40, 44) for e in alone.update(at(k, light="green" if k == 41 else None))]
    assert [(e.activity, e.track_id, e.class_id, e.scanned_at) for e in out] == [("scan", -1, -1, pytest.approx(8.2))]


@pytest.mark.parametrize("penalty, banana_gets_chips", [(None, False), (0.0, True)])
def test_an_item_carried_over_a_resting_one_keeps_its_own_track(monkeypatch, penalty, banana_gets_chips):
    """A held detection pays HELD_ONTO_REST to take a resting track: chips (2) carried over a banana (5)
    resting in the basket, in the frame the head misses the banana, stay on their own track; with no
    penalty (as before) the banana's track takes them, its item is read as chips and the chips lose a frame."""
    from edge_runtime.items import tracker

    if penalty is not None:
        monkeypatch.setattr(tracker, "HELD_ONTO_REST", penalty)
    items = tracker.ItemTracker(fps=FPS)
    classes_of = defaultdict(list)
    for k in range(12):
        xs, cls, held = ([0.42], [5], [0.0]) if k != 5 else ([], [], [])
        xs, cls, held = xs + [0.10 + 0.06 * k if k < 5 else 0.39 + 0.07 * (k - 5)], cls + [2], held + [1.0]
        boxes = np.array([[x, 0.5, x + 0.1, 0.6] for x in xs], np.float32)
        items.update(Detections(k / FPS, boxes, np.full(len(xs), 0.8), np.array(cls), np.array(held)))
        for tid, i in items.last_seen.items():
            classes_of[tid].append(cls[i])
    banana, chips = sorted(classes_of)
    assert (2 in classes_of[banana]) == banana_gets_chips
    assert classes_of[chips] == [2] * (11 if banana_gets_chips else 12)



@pytest.mark.parametrize("gate, misnamed, tracks", [(None, None, 1), (0.0, None, 4), (None, 4, 2)])
def test_a_fast_carry_keeps_its_track(monkeypatch, gate, misnamed, tracks):
    """Chips (2) lifted and carried 0.09 a frame (a 0.1 box): the Kalman prediction lags and the boxes
    stop overlapping it. Near the predicted centre, of the track's product, a held detection stays on
    its track (CARRY_GATE); with no gate (as before) the track breaks three times. The frame the head
    names a banana (5) there is not taken onto the chips' track."""
    from edge_runtime.items import tracker

    if gate is not None:
        monkeypatch.setattr(tracker, "CARRY_GATE", gate)
    items = tracker.ItemTracker(fps=FPS)
    ids = []
    for k in range(9):
        x = 0.1 if k < 3 else 0.1 + 0.09 * (k - 2)
        box = np.array([[x, 0.5, x + 0.1, 0.6]], np.float32)
        items.update(Detections(k / FPS, box, [0.8], [5 if k == misnamed else 2], [1.0]))
        ids += list(items.last_seen)
    assert len(set(ids)) == tracks
    if misnamed is not None:
        assert ids[misnamed] != ids[misnamed - 1]


def _glass_lane():
    """Counter, scanner and bag side by side; one soda can (3) at (x, 0.5), held or not."""
    zones = Zones.from_dict({"counter": [[0, 0.3], [0.4, 0.3], [0.4, 0.9], [0, 0.9]],
                             "scanner": [[0.4, 0.3], [0.6, 0.3], [0.6, 0.9], [0.4, 0.9]],
                             "bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]})

    def at(k, x=None, held=1.0):
        if x is None:
            return Detections(k / FPS, np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, int), np.zeros(0))
        return Detections(k / FPS, np.array([[x, 0.5, x + 0.1, 0.6]], np.float32), np.array([0.8]), np.array([3]),
                          np.array([held], np.float32))
    return ItemState(zones, bundle_id="b"), at


def test_an_item_held_over_the_glass_then_bagged_is_passed_around_from_its_first_moment_there():
    state, at = _glass_lane()
    events = [e for k in range(5) for e in state.update(at(k, 0.2 + 0.06 * k))]  # over the glass from 0.6 s
    events += [e for k in range(5, 65) for e in state.update(at(k, 0.45))]      # held there 12 s, no read
    events += [e for k in range(65, 73) for e in state.update(at(k, 0.5 + 0.04 * (k - 65)))]  # into the bag
    events += [e for k in range(73, 90) for e in state.update(at(k))]
    # the bag itself from the item leaving the glass, where it was held still
    assert [(e.activity, e.start) for e in events] == [("pass_around", pytest.approx(0.6)), ("bag", pytest.approx(12.8))]
    assert 0 < state.nbytes() <= state.max_nbytes()


def test_an_item_set_down_on_the_glass_with_no_read_is_a_pass_around_however_long_it_was_held():
    state, at = _glass_lane()
    events = [e for k in range(30) for e in state.update(at(k, 0.2))]             # held 6 s on the counter side
    events += [e for k in range(30, 35) for e in state.update(at(k, 0.2 + 0.05 * (k - 29)))]
    events += [e for k in range(35, 40) for e in state.update(at(k, 0.45, held=0.0))]  # let go on the glass
    assert [e.activity for e in events] == ["pass_around"]
    # read as it was let go: a scan
    state, at = _glass_lane()
    events = [e for k in range(30) for e in state.update(at(k, 0.2))]
    events += [e for k in range(30, 35) for e in state.update(at(k, 0.2 + 0.05 * (k - 29)))]
    assert state.till_read(6.9, 3) is not None
    events += [e for k in range(35, 40) for e in state.update(at(k, 0.45, held=0.0))]
    assert [e.activity for e in events] == ["scan"]


@pytest.mark.parametrize("light, decided", [("red", ("scan", None)), (None, ("pass_around", None))])
def test_an_item_the_scanner_lit_red_over_is_a_scan_tried_not_a_pass_around(light, decided):
    """A red light while the item is over the glass: the scanner was shown it and did not read it (or the
    head read its green flash red). Named a scan, unpaid (the bag rule judges its bag), not a pass-around,
    which sets off no light; across a snapshot taken between."""
    state, at = _glass_lane()
    events = [e for k in range(5) for e in state.update(at(k, 0.2 + 0.05 * k))]       # carried onto the glass
    for k in range(5, 8):                                                               # held there, lit
        d = at(k, 0.45)
        events += state.update(Detections(d.t, d.boxes, d.scores, d.classes, d.held, light=light if k == 6 else None))
    sd = state.state_dict()
    state = ItemState(state.zones, bundle_id="b")
    state.load_state_dict(sd, "b")
    events += [e for k in range(8, 12) for e in state.update(at(k, 0.45, held=0.0))]    # let go on it
    assert [(e.activity, e.scanned_at) for e in events] == [decided]


def test_a_bag_begins_when_the_item_leaves_where_it_lay_not_when_its_handling_began():
    """The head reads an item set down on the counter or the scanner, the hand still near, as held, so
    one handling runs from the basket to the bag; the bag is timed from the item leaving where it lay."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")

    frames = [_square(k, 0.05, 0.1, 0.0) for k in range(5)]                           # at rest
    frames += [_square(k, 0.05 + 0.05 * (k - 4), 0.12, 1.0) for k in range(5, 9)]     # lifted, carried 1.0-1.6 s
    frames += [_square(k, 0.25, 0.12, 1.0) for k in range(9, 20)]                     # set down, still "held", 1.8-3.8 s
    frames += [_square(k, 0.25 + 0.06 * (k - 19), 0.12, 1.0) for k in range(20, 27)]  # carried into the bag
    frames += [_square(k, 0.68, 0.08, 1.0) for k in range(27, 40)]                    # let go in the bag
    bags = [e for k, d in enumerate(frames) for e in state.update(d) if e.activity == "bag"]
    assert [(e.start, e.end) for e in bags] == [(pytest.approx(3.8), pytest.approx(5.8))]


def test_an_item_come_to_rest_on_the_counter_from_the_basket_is_picked_up_then_once():
    """The head reads an item set down on the counter, the hand still near, as held: it is picked up as
    it comes to rest there (its box put two frames running), and its handling goes on to the bag with
    no second pick-up, across a snapshot too; the bag is timed from the item leaving the counter."""
    zones = Zones.from_dict({"basket": [[0, 0.3], [0.3, 0.3], [0.3, 0.9], [0, 0.9]],
                             "counter": [[0.3, 0.3], [0.6, 0.3], [0.6, 0.9], [0.3, 0.9]],
                             "bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]})
    state = ItemState(zones, bundle_id="b")

    frames = [_square(k, 0.1, 0.1, 0.0) for k in range(5)]                             # in the basket
    frames += [_square(k, 0.1 + 0.06 * (k - 4), 0.12, 1.0) for k in range(5, 10)]      # lifted onto the counter
    frames += [_square(k, 0.4, 0.12, 1.0) for k in range(10, 20)]                      # lies there, still "held"
    frames += [_square(k, 0.4 + 0.05 * (k - 19), 0.12, 1.0) for k in range(20, 27)]   # carried into the bag
    frames += [_square(k, 0.72, 0.08, 1.0) for k in range(27, 40)]                     # let go there
    events = []
    for k, d in enumerate(frames):
        if k == 15:
            sd = state.state_dict()
            state = ItemState(zones, bundle_id="b")
            state.load_state_dict(sd, "b")
        events += [(e.activity, e.start, e.end) for e in state.update(d)]
    assert events == [("pick_up", pytest.approx(1.0), pytest.approx(2.2)),
                      ("bag", pytest.approx(3.8), pytest.approx(5.8))]


def test_track_identities_follow_the_tracks_past_their_end_and_through_a_snapshot():
    """A head with the reader's identity: each track's identity is its detections' score-weighted mean;
    an ended track's is kept (bounded), and a snapshot restores both; a snapshot of another width is refused."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b", embed_dim=4, max_events=2)
    a, b = np.array([1, 0, 0, 0], np.float32), np.array([0, 1, 0, 0], np.float32)

    def frame(k, items):  # items: [(x, embed)] side by side, resting
        boxes = np.array([[x, 0.5, x + 0.1, 0.6] for x, _ in items], np.float32).reshape(-1, 4)
        n = len(items)
        return Detections(k / FPS, boxes, np.ones(n), np.zeros(n, np.int64), np.zeros(n, np.float32),
                          embed=np.stack([e for _, e in items]) if items else np.zeros((0, 4), np.float32))

    for k in range(10):  # one item seen as a, then (weaker) as b: still a
        state.update(frame(k, [(0.1, a if k < 7 else 0.5 * a + 0.5 * b), (0.5, b)]))
    first, second = sorted(tr.track_id for tr in state.tracker.tracks)
    assert np.argmax(state.identity(first)) == 0 and np.argmax(state.identity(second)) == 1
    assert np.isclose(np.linalg.norm(state.identity(first)), 1.0)
    back = ItemState(zones, bundle_id="b", embed_dim=4, max_events=2)
    back.load_state_dict(state.state_dict(), "b")
    for k in range(10, 30):  # both leave; the restored state ends them too
        state.update(frame(k, []))
        back.update(frame(k, []))
    assert not state.tracker.tracks and not back.tracker.tracks
    for s in (state, back):
        assert np.argmax(s.identity(first)) == 0 and np.argmax(s.identity(second)) == 1
    assert np.allclose(back.identity(first), state.identity(first), atol=1e-6)
    assert state.nbytes() <= state.max_nbytes()
    for k in range(30, 50):  # two more tracks: the oldest identity is forgotten (2 kept)
        state.update(frame(k, [(0.1, b), (0.5, a)] if k < 35 else []))
    assert state.identity(first) is None and len(state.identities.ended) == 2
    wide = ItemState(zones, bundle_id="b", embed_dim=8)
    with pytest.raises(ValueError, match="track identities are not 8 wide"):
        wide.load_state_dict(back.state_dict(), "b")


@pytest.mark.parametrize("in_bag, until", [(0.08, 3.2),   # let go in the bag: under way until it settles there
                                           (0.2, 2.6)])   # held up toward the camera over the bag: not from then
def test_a_bag_under_way_is_the_held_item_in_the_bag_zone_until_it_is_let_go(in_bag, until):
    """An early nudge's cue: the item carried into the bag zone, not let go yet, as the bag it would be
    (from leaving where it lay, to its first detection in the bag zone); gone once it is bagged."""
    zones = Zones.from_dict(COUNTER_BAG)
    state = ItemState(zones, bundle_id="b")
    frames = [_square(k, 0.2, 0.1, 0.0) for k in range(5)]                                  # at rest on the counter
    frames += [_square(k, 0.2 + 0.06 * (k - 5), 0.1, 1.0) for k in range(5, 13)]            # carried to the bag
    frames += [_square(k, 0.68, in_bag, 1.0) for k in range(13, 31)]                         # in the bag, held
    seen = []
    for k, d in enumerate(frames):
        decided = state.update(d)
        seen += [(k / FPS, e.start, e.end) for e in state.entering()]
        if decided:
            assert state.entering() == ()
    # from its first detection in the bag zone (2.2 s), timed from leaving the counter (1.0 s) to then
    assert seen[0] == (pytest.approx(2.2), pytest.approx(1.0), pytest.approx(2.2))
    assert all(end == pytest.approx(2.2) for _, _, end in seen) and seen[-1][0] < until
    state.flush()
    assert state.entering() == ()
