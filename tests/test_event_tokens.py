"""tools/accuracy/event_tokens.py: per-frame event tokens from timeline tokens, and what they answer."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tools.accuracy.event_tokens import answer, event_tokens, happened_events, runs


def _facts(n: int) -> dict:
    # every token's event lasts 1 s before and 2 s after it; boxes move right 0.01 a token
    return {"span": np.tile([1.0, 2.0], (n, 1)),
            "boxes": np.array([[0.1 + 0.01 * i, 0.2, 0.3 + 0.01 * i, 0.4] for i in range(n)])}


def test_each_frame_keeps_its_best_pairs_from_its_best_token():
    # two frames, two tokens each; 2 activities x 2 classes
    t = np.array([0.0, 0.0, 1.0, 1.0])
    p_class = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.1, 0.2]])
    p_act = np.array([[0.1, 0.9], [0.7, 0.3], [0.6, 0.4], [0.9, 0.1]])
    p_event = np.array([1.0, 0.5, 1.0, 1.0])
    ev = event_tokens(t, p_class, p_act, p_event, k=2)
    assert ev.shape == (4, 5)
    # frame 0: (act 1, class 0) from token 0 scores 0.81; then (act 0, class 1) from token 1: 0.5 x 0.7 x 0.8
    assert ev[0].tolist() == [0.0, 1.0, 0.0, 0.81, 0.0]
    assert ev[1][:3].tolist() == [0.0, 0.0, 1.0] and abs(ev[1, 3] - 0.28) < 1e-9 and ev[1, 4] == 1
    # frame 1: token 2's (act 0, class 0) and (act 0, class 1) tie at 0.3: the first in order wins
    assert ev[2][:3].tolist() == [1.0, 0.0, 0.0] and abs(ev[2, 3] - 0.3) < 1e-9 and ev[2, 4] == 2


def test_runs_group_tokens_in_time_and_span_their_predicted_events():
    ev = np.array([[10.0, 0, 0, 0.5, 0], [12.0, 0, 0, 0.5, 1], [30.0, 0, 0, 0.9, 2], [31.0, 1, 0, 0.9, 3]])
    w = ev[:, 3] * (ev[:, 1] == 0)
    got = runs(ev, w, _facts(4)["span"], gap=4.0)
    # two runs of activity 0, ranked by summed weight: 10-12 s (1.0) then 30 s (0.9)
    assert [(s, e, round(p, 6)) for s, e, p, _ in got] == [(9.0, 14.0, 1.0), (29.0, 32.0, 0.9)]
    assert runs(ev, np.zeros(4), _facts(4)["span"]) == []


def test_answers_read_only_the_asked_pair_inside_the_window():
    ev = np.array([[10.0, 0, 0, 0.5, 0], [11.0, 0, 0, 0.5, 1], [20.0, 0, 1, 0.9, 2], [50.0, 0, 0, 0.9, 3]])
    facts = _facts(4)
    q = SimpleNamespace(type="time", start=0.0, end=40.0, activity_id=0)
    # class 0: the run at 10-11 s; class 1's stronger token and the token after the window do not count
    assert answer(q, ev, facts, 0, 2, 5.0)["intervals"][0][:2] == [9.0, 13.0]
    assert answer(q, ev, facts, 1, 2, 5.0)["intervals"][0][:2] == [19.0, 22.0]
    act = answer(SimpleNamespace(type="activity", start=0.0, end=40.0, activity_id=None), ev, facts, 0, 2, 5.0)
    assert act["scores"] == [0.5, 0.0]
    obj = answer(SimpleNamespace(type="object", start=0.0, end=40.0, activity_id=0), ev, facts, 0, 2, 5.0)
    # the best run is 10-11 s (summed 1.0 over 20 s's 0.9), its boxes at 5 frames a second
    assert obj["tracks"][0]["times"][0] == 9.0 and len(obj["tracks"]) == 2


def test_what_happened_from_the_top_pairs_keeps_strong_runs():
    ev = np.array([[10.0, 1, 0, 0.6, 0], [11.0, 1, 0, 0.6, 1], [30.0, 1, 0, 0.9, 2], [40.0, 0, 1, 0.3, 3]])
    got = happened_events(ev, _facts(4), ["scan", "bag"], ["milk", "bread"])
    # 10-11 s sums 1.2: an event; 30 s alone sums 0.9 (< 1.0) and 40 s is under the token floor
    assert [(e.activity, e.product, e.start, e.end) for e in got] == [("bag", "milk", 9.0, 13.0)]
