"""No memory, no answer: answers come from the covered part of the asked window only."""
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.query.slots import ranked_intervals
from edge_runtime.query.coverage import covered_spans, hold_to_spans, window_coverage
from edge_runtime.engine.engine import Engine


def _snap(start, end, gaps=()):
    return SimpleNamespace(start=start, end=end, gaps=list(gaps))


def test_covered_spans_hand_built():
    s = _snap(10.0, 100.0, [(30.0, 40.0), (60.0, 70.0)])
    assert covered_spans(s, 0.0, 200.0) == [(10.0, 30.0), (40.0, 60.0), (70.0, 100.0)]
    assert covered_spans(s, 35.0, 65.0) == [(40.0, 60.0)]
    assert covered_spans(s, 31.0, 39.0) == []                  # inside a gap
    assert covered_spans(s, -50.0, 5.0) == []                  # before the stream
    assert covered_spans(s, 100.0, 120.0) == []                # after the last commit
    assert covered_spans(_snap(None, None), 0.0, 10.0) == []   # nothing committed yet
    cov = window_coverage(s, 0.0, 200.0)
    assert cov["coverage"] == {"start": 10.0, "end": 100.0, "covered_fraction": pytest.approx(70 / 200)}
    assert cov["gaps"] == [[30.0, 40.0], [60.0, 70.0]]


def test_hold_to_spans_drops_boxes_in_gaps_and_clips_intervals():
    spans = [(10.0, 30.0), (40.0, 50.0)]
    a = {"times": [10.0, 20.0, 35.0, 45.0], "boxes": [[0, 0, 1, 1]] * 4, "extent": [10.0, 45.0, 0.5]}
    out = hold_to_spans(a, spans, (0.0, 50.0))
    assert out["times"] == [10.0, 20.0, 45.0] and len(out["boxes"]) == 3
    assert out["status"] == "partial" and out["answered_spans"] == [[10.0, 30.0], [40.0, 50.0]]
    t = hold_to_spans({"intervals": [[0.0, 15.0, 0.4], [55.0, 60.0, 0.3]]}, spans, (0.0, 60.0))
    assert t["intervals"] == [[10.0, 15.0, 0.4]]
    whole = hold_to_spans({"scores": [0.1]}, [(0.0, 50.0)], (0.0, 50.0))
    assert whole["status"] == "answered" and "answered_spans" not in whole


def test_ranked_intervals_are_never_zero_length():
    t = np.linspace(0.0, 1800.0, 128)
    mask = np.ones(128)
    peak = np.full(128, -10.0)
    peak[40] = 10.0
    (s, e, p), = ranked_intervals(t, peak, peak, mask, 1)   # start and end on the same slot
    half = (t[1] - t[0]) / 2
    assert e - s == pytest.approx(2 * half) and s == pytest.approx(t[40] - half)
    edge = np.full(128, -10.0)
    edge[0] = 10.0
    (s, e, _), = ranked_intervals(t, edge, edge, mask, 1)   # clipped to the window, still > 0
    assert s == 0.0 and e == pytest.approx(half)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    with Engine(tiny_bundle, threads=2, answers="heads") as e:  # the reader's windows: test_runtime_reader.py
        yield e


def test_engine_answers_only_from_memory(engine):
    stream = engine.new_stream()
    crop = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    asks = [{"type": "activity", "start": 0, "end": 60, "object_image": crop},
            {"type": "object", "start": -50, "end": 30, "activity": 1},
            {"type": "time", "start": 0, "end": 60, "activity": 2, "object_image": crop}]
    for a in engine.answer(stream, asks):   # nothing committed: typed answers, no scores, boxes or intervals
        assert a["status"] == "no_memory" and a["coverage"]["covered_fraction"] == 0.0
        assert not {"scores", "ranked", "boxes", "times", "intervals"} & set(a)
    T = engine.clip_frames
    frames = np.random.default_rng(0).integers(0, 256, (2 * T, 112, 112, 3), dtype=np.uint8)
    engine.ingest(stream, frames, np.arange(2 * T, dtype=float))
    act, obj, tim = engine.answer(stream, asks)
    assert act["status"] == "partial" and act["answered_spans"] == [[0.0, float(2 * T)]]
    assert obj["status"] == "partial" and obj["times"] and min(obj["times"]) >= 0.0   # no box before the stream
    assert all(0.0 <= s < e <= 2 * T for s, e, _ in tim["intervals"])
    inside = engine.answer(stream, [{**asks[0], "start": 2, "end": 20}])[0]
    assert inside["status"] == "answered" and len(inside["scores"]) == engine.cfg.heads.num_activities
