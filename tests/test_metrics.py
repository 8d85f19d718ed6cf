"""ReST metrics on hand-built cases: multi-label Recall@kx, strict 0.3 thresholds,
degenerate boxes and intervals, per-query aggregation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.checkout.metrics import (
    aggregate, box_iou, object_hit, recall_at_kx, recall_object, recall_time, score_query, tiou, viou,
)

# ------------------------------------------------------------------ Recall@kx (activity, multi-label)


def test_recall_at_kx_hand_computed():
    # classes ranked by score: 3, 0, 5, 1, 2, 4, 6, 7
    scores = np.array([0.8, 0.5, 0.3, 0.9, 0.2, 0.7, 0.1, 0.0])
    assert recall_at_kx(scores, [3], 1) == 1.0               # top-1 = {3}
    assert recall_at_kx(scores, [0], 1) == 0.0               # top-1 = {3}
    assert recall_at_kx(scores, [0], 3) == 1.0               # top-3 = {3, 0, 5}
    assert recall_at_kx(scores, [3, 1], 1) == 0.5            # top-2 = {3, 0}: finds 3 only
    assert recall_at_kx(scores, [3, 1], 3) == 1.0            # top-6 = {3, 0, 5, 1, 2, 4}
    assert recall_at_kx(scores, [6, 7, 0], 1) == pytest.approx(1 / 3)   # top-3 = {3, 0, 5}
    assert recall_at_kx(scores, [6, 7, 0], 3) == 1.0                    # top-9 > 8 classes: all of them
    assert recall_at_kx(scores, [4, 6], 1) == 0.0                       # top-2 = {3, 0}
    assert recall_at_kx(scores, [4, 6], 3) == 0.5                       # top-6 = {3, 0, 5, 1, 2, 4}: 6 missing


def test_recall_at_kx_top_k_larger_than_classes_and_duplicates():
    scores = np.array([0.1, 0.2, 0.3])
    assert recall_at_kx(scores, [0, 1], 3) == 1.0   # 6 > 3 classes: everything is predicted
    assert recall_at_kx(scores, [2, 2], 1) == 1.0   # duplicates in G count once: |G| = 1, top-1 = {2}


def test_recall_at_kx_ties_break_by_class_index():
    scores = np.zeros(5)
    assert recall_at_kx(scores, [0], 1) == 1.0
    assert recall_at_kx(scores, [4], 1) == 0.0


def test_recall_at_kx_empty_ground_truth_is_none():
    assert recall_at_kx(np.ones(8), [], 1) is None
    assert recall_at_kx(np.ones(8), (), 3) is None


# ------------------------------------------------------------------ boxes / vIoU


def test_box_iou_hand_computed_and_degenerate():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0            # touching edges
    assert box_iou((0.5, 0.5, 0.5, 0.5), (0, 0, 1, 1)) == 0.0    # zero-area box inside
    assert box_iou((0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)) == 0.0  # empty union
    assert box_iou((1, 1, 0, 0), (0, 0, 1, 1)) == 0.0            # reversed box has no area


def _track_at(times, box=(0, 0, 1, 1)):
    return {round(t, 6): box for t in times}


def test_viou_partial_frames_hand_computed():
    gt = [(0.0, 0, 0, 1, 1), (0.2, 0, 0, 1, 1), (0.4, 0, 0, 1, 1), (0.6, 0, 0, 1, 1)]
    pred = {0.0: (0, 0, 1, 1), 0.2: (0, 0, 2, 1), 0.4: (5, 5, 6, 6)}   # IoU 1, 0.5, 0; 0.6 missed
    # S_i = {0, .2, .4}, S_u = {0, .2, .4, .6}
    assert viou(pred, gt) == pytest.approx(1.5 / 4)
    # same prediction as arrays and as {"times", "boxes"}
    arr = np.array([[t, *b] for t, b in pred.items()])
    assert viou(arr, gt) == pytest.approx(1.5 / 4)
    assert viou({"times": list(pred), "boxes": list(pred.values())}, np.array(gt)) == pytest.approx(1.5 / 4)
    # a box predicted where the object is not widens the union: 1.5 / 5
    assert viou({**pred, 9.0: (0, 0, 1, 1)}, gt) == pytest.approx(1.5 / 5)


def test_viou_longer_prediction_is_penalised():
    """40 predicted frames covering a 10-frame ground truth with perfect boxes: 10 / 40, a miss."""
    gt = [(t, 0, 0, 1, 1) for t in np.arange(10) * 0.2]
    pred = _track_at(np.arange(-10, 30) * 0.2)
    assert viou(pred, gt) == pytest.approx(0.25)
    assert not object_hit(pred, gt)


def test_viou_shorter_disjoint_equal_empty():
    gt = [(t, 0, 0, 1, 1) for t in np.arange(10) * 0.2]
    assert viou(_track_at(np.arange(4) * 0.2), gt) == pytest.approx(4 / 10)            # shorter
    assert viou(_track_at(np.arange(20, 30) * 0.2), gt) == 0.0                         # disjoint
    assert viou(_track_at(np.arange(10) * 0.2), gt) == pytest.approx(1.0)              # equal
    assert viou({}, gt) == 0.0                                                         # empty prediction
    assert viou(_track_at([0.0]), []) is None                                          # no ground truth
    # each predicted frame counts once even if it is near two ground-truth frames
    assert viou({0.1: (0, 0, 1, 1)}, [(0.0, 0, 0, 1, 1), (0.2, 0, 0, 1, 1)], tol=0.1) == pytest.approx(1 / 2)


def test_viou_matches_frames_within_half_a_frame():
    gt = [(10.0, 0, 0, 1, 1)]
    assert viou({10.06: (0, 0, 1, 1)}, gt) == 1.0
    assert viou({10.3: (0, 0, 1, 1)}, gt) == 0.0


def test_object_hit_strict_threshold():
    gt = [(0.0, 0.0, 0.0, 10.0, 1.0), (0.2, 0.0, 0.0, 10.0, 1.0)]
    exactly = {0.0: (0.0, 0.0, 3.0, 1.0), 0.2: (0.0, 0.0, 3.0, 1.0)}      # IoU 3/10 = 0.3 in every frame
    assert box_iou(exactly[0.0], gt[0][1:]) == 0.3
    assert viou(exactly, gt) == 0.3
    assert not object_hit(exactly, gt)
    above = {0.0: (0.0, 0.0, 3.0001, 1.0), 0.2: (0.0, 0.0, 3.0001, 1.0)}
    assert viou(above, gt) > 0.3
    assert object_hit(above, gt)
    # perfect boxes over a union of 10 frames of which 3 are shared: exactly 0.3, not a hit
    gt10 = [(t, 0, 0, 1, 1) for t in np.arange(3) * 0.2]
    pred10 = _track_at(np.arange(10) * 0.2)
    assert viou(pred10, gt10) == pytest.approx(0.3)
    assert not object_hit(pred10, gt10)
    assert object_hit(_track_at(np.arange(9) * 0.2), gt10)   # 3 / 9 > 0.3


def test_recall_object_ranked_predictions():
    gt = [(0.0, 0, 0, 1, 1)]
    miss, hit = {0.0: (2, 2, 3, 3)}, {0.0: (0, 0, 1, 1)}
    assert recall_object([miss, hit], gt, 1) == 0.0
    assert recall_object([miss, hit], gt, 3) == 1.0
    assert recall_object([hit], gt, 1) == 1.0
    assert recall_object([], gt, 3) == 0.0
    assert recall_object([hit], [], 1) is None


# ------------------------------------------------------------------ time / tIoU


def test_tiou_hand_computed_and_strict_threshold():
    assert tiou((0, 10), (0, 10)) == 1.0
    assert tiou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert tiou((0, 1), (2, 3)) == 0.0
    assert tiou((0, 3), (0, 10)) == 0.3
    assert recall_time([(0, 3)], (0, 10), 1) == 0.0                 # exactly 0.3 is not a hit
    assert recall_time([(0, 3.0001)], (0, 10), 1) == 1.0            # 0.3 + eps is
    assert recall_time([(20, 30), (0, 10, 0.1)], (0, 10), 1) == 0.0
    assert recall_time([(20, 30), (0, 10, 0.1)], (0, 10), 3) == 1.0
    assert recall_time([], (0, 10), 3) == 0.0
    assert recall_time([(0, 10)], None, 1) is None


def test_tiou_zero_length_intervals():
    assert tiou((5, 5), (0, 10)) == 0.0          # point inside: no overlap length
    assert tiou((5, 5), (5, 5)) == 0.0           # empty union scores 0, even when equal
    assert tiou((0, 10), (5, 5)) == 0.0
    assert tiou((10, 0), (0, 10)) == 0.0         # reversed prediction has zero length


# ------------------------------------------------------------------ per query + aggregate


def test_score_query_and_aggregate_per_query_fractions():
    qa = {"qid": "a1", "type": "activity", "window": "short", "gt_activities": [0, 1]}
    qa_empty = {"qid": "a2", "type": "activity", "window": "short", "gt_activities": []}
    qo = {"qid": "o1", "type": "object", "window": "medium", "gt_boxes": [[1.0, 0, 0, 1, 1], [1.2, 0, 0, 1, 1]]}
    qt = {"qid": "t1", "type": "time", "window": "long", "gt_interval": [10.0, 20.0]}
    qt2 = {"qid": "t2", "type": "time", "window": "long", "gt_interval": [10.0, 20.0]}
    recs = [
        score_query(qa, {"scores": [0.9, 0.1, 0.8, 0.0]}),        # top-2 {0, 2}: 0.5; top-6: 1.0
        score_query(qa_empty, {"scores": [0.9, 0.1, 0.8, 0.0]}),  # None: excluded
        score_query(qo, {"times": [1.0, 1.2], "boxes": [[0, 0, 1, 1], [0, 0, 1, 1]]}),
        score_query(qt, {"intervals": [[0.0, 5.0, 0.5], [10.0, 20.0, 0.4]]}),  # miss @1, hit @3
        score_query(qt2, {"intervals": [[10.0, 19.0, 0.9]]}),
    ]
    assert recs[0]["recall@1x"] == 0.5 and recs[0]["recall@3x"] == 1.0
    assert recs[1]["recall@1x"] is None
    assert recs[2]["recall@1x"] == 1.0 and recs[2]["viou"] == 1.0
    assert recs[3]["recall@1x"] == 0.0 and recs[3]["recall@3x"] == 1.0
    agg = aggregate(recs)
    assert agg["recall@1x"]["activity"] == {"short": 0.5, "medium": None, "long": None}
    assert agg["recall@3x"]["activity"]["short"] == 1.0
    assert agg["recall@1x"]["object"]["medium"] == 1.0
    assert agg["recall@1x"]["time"]["long"] == 0.5          # mean over the two time queries
    assert agg["recall@3x"]["time"]["long"] == 1.0
    assert agg["count"]["activity"]["short"] == 1           # the empty-G query is not counted
    json.dumps(agg)


def test_score_query_accepts_ranked_only_and_ranked_tracks():
    qa = {"qid": "a", "type": "activity", "window": "short", "gt_activities": [2]}
    assert score_query(qa, {"ranked": [2, 0, 1]})["recall@1x"] == 1.0
    assert score_query(qa, {"ranked": [0, 2, 1]})["recall@1x"] == 0.0
    qo = {"qid": "o", "type": "object", "window": "short", "gt_boxes": [[0.0, 0, 0, 1, 1]]}
    ans = {"tracks": [{"times": [0.0], "boxes": [[3, 3, 4, 4]]}, {"times": [0.0], "boxes": [[0, 0, 1, 1]]}]}
    r = score_query(qo, ans)
    assert r["recall@1x"] == 0.0 and r["recall@3x"] == 1.0


def test_score_query_with_query_objects():
    from edge_runtime.checkout import Query

    q = Query(qid="x", video_id="v", type="time", window="medium", start=0.0, end=900.0, instance_id=3,
              activity_id=1, gt_interval=(100.0, 110.0))
    assert score_query(q, {"intervals": [[100.0, 110.0, 1.0]]})["recall@1x"] == 1.0
    q2 = Query.from_dict(q.to_dict())
    assert q2 == q


def test_extent_ratio_and_its_median_per_window():
    from edge_runtime.checkout.metrics import extent_ratio

    gt = [(t, 0, 0, 1, 1) for t in 10 + np.arange(10) * 0.2]         # 10 frames: 2.0 s with the last frame
    assert extent_ratio([10.0, 12.0, 0.9], gt) == pytest.approx(1.0)
    assert extent_ratio([0.0, 8.0], gt) == pytest.approx(4.0)
    assert extent_ratio(None, gt) is None and extent_ratio([0, 1], []) is None
    q = {"qid": "o", "type": "object", "window": "short", "gt_boxes": gt}
    recs = [score_query(q, {"extent": [10.0, 10.0 + 2.0 * f], "times": [], "boxes": []}) for f in (0.5, 1.0, 3.0)]
    assert aggregate(recs)["object_extent_ratio"] == {"short": pytest.approx(1.0), "medium": None, "long": None}


# ------------------------------------------------------------------ "not seen" and confidence


def _q(qid, qtype, absent=False, **gt):
    from edge_runtime.checkout.queries import Query

    return Query(qid=qid, video_id="v", type=qtype, window="short", start=0.0, end=300.0, instance_id=1,
                 activity_id=2, absent=absent, **gt)


def test_expected_calibration_error_hand_computed():
    from edge_runtime.checkout.seen_metrics import expected_calibration_error

    # bin [0.9, 1]: 2 answers at 0.95, one right -> |0.95 - 0.5| = 0.45, half the answers;
    # bin [0.1, 0.2): 2 at 0.1, none right -> 0.1, the other half
    assert expected_calibration_error([0.95, 0.95, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.275)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0       # 1.0 falls in the last bin
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError, match="confidence"):
        expected_calibration_error([1.2], [1])


def test_seen_report_from_answer_lists():
    from edge_runtime.checkout.seen_metrics import format_seen_table, seen_report

    qs = [_q("v/activity/short/0", "activity", gt_activities=(3,)),
          _q("v/activity/short/1", "activity", gt_activities=(4,)),
          _q("v/activity/short/2", "activity", gt_activities=(5,)),
          _q("v/absent-activity/short/0", "activity", absent=True),
          _q("v/absent-activity/short/1", "activity", absent=True),
          _q("v/time/short/0", "time", gt_interval=(10.0, 20.0)),
          _q("v/absent-time/short/0", "time", absent=True)]
    one_hot = lambda c: [1.0 if i == c else 0.0 for i in range(8)]  # noqa: E731
    ans = [{"status": "answered", "scores": one_hot(3), "confidence": 0.9},    # right, confident
           {"status": "answered", "scores": one_hot(0), "confidence": 0.85},   # wrong, confident
           {"status": "not_seen", "scores": one_hot(5), "confidence": 0.95},   # right content, said not seen
           {"status": "not_seen", "scores": one_hot(1), "confidence": 0.05},
           {"status": "answered", "scores": one_hot(1), "confidence": 0.3},
           {"status": "answered", "intervals": [[11.0, 21.0, 0.9]], "confidence": 0.7},  # a hit
           {"status": "answered", "intervals": [[11.0, 21.0, 0.9]], "confidence": 0.6}]
    rep = seen_report(qs, ans)
    a = rep["activity"]
    assert (a["absent"], a["present"]) == (2, 3)
    assert a["absent_not_seen"] == 0.5 and a["present_not_seen"] == pytest.approx(1 / 3)
    # the not-seen answer does not count as a confident answer, however confident its content
    assert a["confident"] == 2 and a["confident_precision"] == 0.5
    # bins: 0.9 and 0.95 -> [0.9, 1]: mean 0.925, both right (content is scored even when not seen);
    # 0.85 wrong; 0.05 and 0.3 wrong (the absent queries)
    assert a["ece"] == pytest.approx((2 * 0.075 + 0.85 + 0.05 + 0.3) / 5)
    t = rep["time"]
    assert t["absent_not_seen"] == 0.0 and t["present_not_seen"] == 0.0 and t["confident"] == 0
    assert t["confident_precision"] is None and t["ece"] == pytest.approx((0.3 + 0.6) / 2)
    assert rep["object"]["absent"] == 0 and rep["object"]["absent_not_seen"] is None
    assert rep["all"]["absent"] == 3 and rep["all"]["present"] == 4
    # the heads' answers: status, no confidence -> n/a cells, not-seen shares still scored
    heads = seen_report(qs, [{"status": "answered", "scores": one_hot(3)}] * 5
                        + [{"status": "answered", "intervals": [[0.0, 1.0]]}] * 2)
    assert heads["activity"]["ece"] is None and heads["activity"]["confident_precision"] is None
    assert heads["activity"]["absent_not_seen"] == 0.0
    table = format_seen_table(heads)
    assert "n/a" in table and table.count("\n") == len(heads)
    with pytest.raises(ValueError, match="answers"):
        seen_report(qs, ans[:3])


def test_absent_flag_round_trips_and_old_files_read():
    from edge_runtime.checkout.absent_queries import is_absent
    from edge_runtime.checkout.queries import Query

    q = _q("v/absent-object/long/0003", "object", absent=True)
    d = json.loads(json.dumps(q.to_dict()))
    assert d["absent"] is True and Query.from_dict(d) == q and is_absent(Query.from_dict(d))
    del d["absent"]  # a file written before the field: the qid says it
    assert Query.from_dict(d).absent
    present = _q("v/object/long/0003", "object")
    assert not Query.from_dict(present.to_dict()).absent and not is_absent(present)
