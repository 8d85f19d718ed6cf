"""Item tracks' box paths kept after the tracks end (edge_runtime/items/track_paths.py): a row when the
box moved or 2 s passed, the last box at the end, boxes read back between rows, one bounded ring,
snapshots with them and without them."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.items.detections import Detections
from edge_runtime.items.item_state import PREFIX, ItemState
from edge_runtime.items.track_paths import KEEP_GAP_S, TrackPaths
from edge_runtime.items.tracker import Track, TrackStep
from edge_runtime.items.zones import Zones

FPS = 5.0


def feed(paths: TrackPaths, track_id: int, times, box_at, end: bool = True) -> Track:
    tr = Track(track_id, times[0], times[-1])
    for t in times:
        tr.add(t, box_at(t), 0.9, 2, 0.0)
        paths.update(TrackStep(t, [tr], {track_id: 0}, []))
    if end:
        paths.update(TrackStep(times[-1] + 2.0, [], {}, [tr]))
    return tr


def test_a_resting_item_keeps_a_row_every_few_seconds_a_carried_one_every_frame():
    paths = TrackPaths()
    rest = np.arange(0, 100) / FPS                                     # 20 s still
    feed(paths, 1, rest, lambda t: np.array([0.1, 0.1, 0.2, 0.2]))
    kept = paths.path(1)
    assert len(kept) == int(20 / KEEP_GAP_S) + 1 and kept[-1, 0] == pytest.approx(rest[-1])  # and its last box
    carry = 30 + np.arange(0, 10) / FPS                                # 2 s across the frame
    feed(paths, 2, carry, lambda t: np.array([0.05 * (t - 30) * FPS, 0.5, 0.05 * (t - 30) * FPS + 0.1, 0.6]))
    assert len(paths.path(2)) == 10
    times, boxes = paths.boxes(2, [29.0, 30.1, 31.0])                  # before its first sight: none
    assert times.tolist() == [30.1, 31.0] and boxes[0] == pytest.approx([0.025, 0.5, 0.125, 0.6])
    assert paths.boxes(3, [30.0]) is None and paths.boxes(2, [40.0]) is None


def test_a_live_tracks_path_ends_at_its_latest_box_and_the_ring_is_bounded():
    paths = TrackPaths(max_rows=12)
    feed(paths, 1, np.arange(0, 20) / FPS, lambda t: np.array([0.1, 0.1, 0.2, 0.2]), end=False)
    assert len(paths.path(1)) == 3 and paths.path(1)[-1, 0] == pytest.approx(19 / FPS)  # kept 0, 2 s, and the latest
    assert paths.horizon() == -np.inf
    feed(paths, 2, 10 + np.arange(0, 12) / FPS, lambda t: np.array([0.1 * (t - 10), 0.5, 0.1 * (t - 10) + 0.05, 0.6]))
    assert len(paths.rows) == 12 and paths.horizon() > 0.0               # the oldest went first
    assert paths.boxes(1, [0.0]) is None and paths.boxes(1, [3.8]) is not None


def test_a_snapshot_keeps_the_paths_and_one_from_before_them_loads_without():
    zones = Zones.from_dict({"counter": [[0, 0.3], [0.6, 0.3], [0.6, 0.9], [0, 0.9]]})
    state = ItemState(zones, bundle_id="b")
    for k in range(30):  # a soda can pushed along the counter
        x = 0.05 + 0.015 * k
        state.update(Detections(k / FPS, np.array([[x, 0.5, x + 0.1, 0.6]], np.float32), np.array([0.8]),
                                np.array([3]), np.array([0.0], np.float32)))
    sd = state.state_dict()
    back = ItemState(zones, bundle_id="b")
    back.load_state_dict(sd, "b")
    assert list(back.paths.rows) == list(state.paths.rows) and len(back.paths.rows) > 3
    assert back.paths.path(0)[-1].tolist() == state.paths.path(0)[-1].tolist()    # the live track's latest box
    old = ItemState(zones, bundle_id="b")
    old.load_state_dict({k: v for k, v in sd.items() if k != PREFIX + "paths"}, "b")
    assert len(old.paths.rows) == 0 and old.paths.path(0).shape == (1, 5)         # only its latest box
    assert 0 < back.nbytes() <= back.max_nbytes() and back.status()["path_rows"] == len(back.paths.rows)
    with pytest.raises(ValueError, match="paths hold 7 numbers, not rows of 6"):
        ItemState(zones, bundle_id="b").load_state_dict({**sd, PREFIX + "paths": np.zeros(7)}, "b")


def test_new_zones_keep_the_paths_and_give_new_tracks_new_ids():
    zones = Zones.from_dict({"counter": [[0, 0.3], [0.6, 0.3], [0.6, 0.9], [0, 0.9]]})
    state = ItemState(zones, bundle_id="b")
    det = Detections(0.0, np.array([[0.1, 0.5, 0.2, 0.6]], np.float32), np.array([0.8]), np.array([3]),
                     np.array([0.0], np.float32))
    state.update(det)
    state.configure(zones)
    state.update(Detections(1.0, det.boxes, det.scores, det.classes, det.held))
    assert state.tracker.tracks[0].track_id == 1 and [int(r[0]) for r in state.paths.rows] == [0, 1]
