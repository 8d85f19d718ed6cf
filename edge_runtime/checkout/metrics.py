"""ReST metrics (activity Recall@kx, object vIoU, time tIoU with strict 0.3 thresholds), numpy only.

- Recall@kx (activity queries, multi-label): with |G| ground-truth classes, take the top k·|G|
  predicted classes; recall = |G ∩ top| / |G|. A query with empty G has no recall (None) and is left
  out of every average.
- object queries: vIoU = (1/|S_u|) · Σ_{t ∈ S_i} IoU(b̂_t, b_t) (LVM-Net §5, after TubeDETR), S_u the
  union and S_i the intersection of the predicted and the ground-truth frames: boxes predicted where
  the object is not cost as much as frames missed. A hit iff vIoU > 0.3 (strictly).
- time queries: tIoU of [ŝ, ê] and [s, e]; a hit iff tIoU > 0.3 (strictly).
- object and time queries have one answer (|G| = 1): Recall@kx = 1 if any of the top k ranked
  predictions is a hit, else 0.

``aggregate`` averages per query (macro over queries) within each (type, window) cell and reports
fractions in [0, 1] (not percentages).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edge_runtime.query.types import NAMES, tiou

HIT_IOU = 0.3           # strict: a hit needs IoU > HIT_IOU
KS = (1, 3)             # reported Recall@kx
TYPES = NAMES
WINDOWS = ("short", "medium", "long")
FRAME_TOL = 0.1         # s: a predicted box counts for a ground-truth frame within this time (half a 5 fps frame)


# ------------------------------------------------------------------------------------------ activity


def recall_at_kx(scores: np.ndarray, gt: Sequence[int], k: int) -> float | None:
    """Multi-label Recall@kx: fraction of the ground-truth classes among the top k·|G| scores.

    Ties are broken by class index (stable sort). ``None`` for an empty ground truth."""
    g = {int(x) for x in gt}
    if not g:
        return None
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    top = np.argsort(-s, kind="stable")[: k * len(g)]
    return len(g.intersection(top.tolist())) / len(g)


# ------------------------------------------------------------------------------------------ object


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes. Degenerate boxes (zero or negative width/height) have zero
    area; IoU is 0 when the union is empty."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a[:4])
    bx1, by1, bx2, by2 = (float(v) for v in b[:4])
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _track(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """A box track in any accepted form -> (times (N,), boxes (N, 4)).

    Accepted: {t: box}; {"times": [...], "boxes": [[x1, y1, x2, y2], ...]}; (times, boxes);
    an (N, 5) array-like of rows (t, x1, y1, x2, y2)."""
    if isinstance(x, Mapping):
        if "times" in x and "boxes" in x:
            t, b = x["times"], x["boxes"]
        else:
            items = sorted((float(k), v) for k, v in x.items())
            t, b = [k for k, _ in items], [v for _, v in items]
    elif isinstance(x, tuple) and len(x) == 2 and not np.isscalar(x[0]) and np.asarray(x[0]).ndim == 1 \
            and np.asarray(x[1]).ndim == 2:
        t, b = x
    else:
        arr = np.asarray(x, dtype=np.float64).reshape(-1, 5) if len(x) else np.zeros((0, 5))
        return arr[:, 0], arr[:, 1:5]
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4) if len(t) else np.zeros((0, 4))
    if len(t) != len(b):
        raise ValueError(f"track has {len(t)} times but {len(b)} boxes")
    return t, b


def _match_frames(pred_t: np.ndarray, gt_t: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """Pairs (ground-truth frame, predicted frame) that are the same frame: nearest in time within
    ``tol`` seconds, each predicted frame used at most once (both tracks are sorted in time)."""
    pairs, used = [], set()
    order = np.argsort(pred_t, kind="stable")
    ts = pred_t[order]
    for i, t in enumerate(gt_t):
        lo = int(np.searchsorted(ts, t - tol - 1e-9, side="left"))
        hi = int(np.searchsorted(ts, t + tol + 1e-9, side="right"))
        best = None
        for j in range(lo, hi):
            if int(order[j]) not in used and (best is None or abs(ts[j] - t) < abs(ts[best] - t)):
                best = j
        if best is not None:
            used.add(int(order[best]))
            pairs.append((i, int(order[best])))
    return pairs


def viou(pred_boxes: Any, gt_boxes: Any, tol: float = FRAME_TOL) -> float | None:
    """The paper's vIoU: Σ over frames in both tracks of the box IoU, divided by the number of frames
    in either track. A predicted frame and a ground-truth frame are the same frame when within ``tol``
    seconds. ``None`` when there is no ground-truth frame; 0 for an empty prediction."""
    gt_t, gt_b = _track(gt_boxes)
    if len(gt_t) == 0:
        return None
    pt, pb = _track(pred_boxes)
    pairs = _match_frames(pt, gt_t, tol)
    union = len(gt_t) + len(pt) - len(pairs)
    return math.fsum(box_iou(pb[j], gt_b[i]) for i, j in pairs) / union


def extent_ratio(extent: Sequence[float] | None, gt_boxes: Any) -> float | None:
    """Length of a predicted extent [s, e, ...] over the ground-truth track's (first to last frame,
    plus one frame); None without either."""
    gt_t, _ = _track(gt_boxes)
    if extent is None or len(gt_t) == 0:
        return None
    frame = float(np.median(np.diff(gt_t))) if len(gt_t) > 1 else 2 * FRAME_TOL
    return (float(extent[1]) - float(extent[0])) / (float(gt_t[-1] - gt_t[0]) + frame)


def object_hit(pred_boxes: Any, gt_boxes: Any, tol: float = FRAME_TOL) -> bool:
    v = viou(pred_boxes, gt_boxes, tol)
    return v is not None and v > HIT_IOU


def recall_object(pred_list: Sequence[Any], gt: Any, k: int, tol: float = FRAME_TOL) -> float | None:
    """1.0 if any of the top ``k`` ranked box tracks has vIoU > 0.3, else 0.0; None without ground truth."""
    if len(_track(gt)[0]) == 0:
        return None
    return 1.0 if any(object_hit(p, gt, tol) for p in list(pred_list)[:k]) else 0.0


# ------------------------------------------------------------------------------------------ time


def recall_time(pred_list: Sequence[Sequence[float]], gt: Sequence[float] | None, k: int) -> float | None:
    """1.0 if any of the top ``k`` ranked intervals (s, e[, score]) has tIoU > 0.3, else 0.0."""
    if gt is None:
        return None
    return 1.0 if any(tiou(p, gt) > HIT_IOU for p in list(pred_list)[:k]) else 0.0


# ------------------------------------------------------------------------------------------ queries


def _get(q: Any, name: str, default=None):
    return q.get(name, default) if isinstance(q, Mapping) else getattr(q, name, default)


def score_query(query: Any, answer: Mapping[str, Any], ks: Iterable[int] = KS) -> dict:
    """Score one answer against a Query (or its to_dict()).

    Answers, as ``edge_runtime.query.answers.decode_answers`` writes them:
      activity: {"scores": [C floats]} (or only {"ranked": [class ids best first]})
      object:   {"times": [...], "boxes": [[x1, y1, x2, y2], ...]} (one track), or
                {"tracks": [{"times", "boxes"}, ...]} ranked best first
      time:     {"intervals": [[s, e] or [s, e, p], ...]} ranked best first
    -> {"qid", "type", "window", "recall@1x", "recall@3x", ...}; recall None when the query has
    no ground truth (left out of averages)."""
    qtype = _get(query, "type")
    scorer = _SCORERS.get(qtype) if isinstance(qtype, str) else None
    if scorer is None:
        raise ValueError(f"unknown query type {qtype!r}")
    rec: dict[str, Any] = {"qid": _get(query, "qid"), "type": qtype, "window": _get(query, "window")}
    rec.update(scorer(query, answer, tuple(ks)))
    return rec


def _score_activity(query: Any, answer: Mapping[str, Any], ks: tuple[int, ...]) -> dict:
    gt = list(_get(query, "gt_activities", ()) or ())
    if answer.get("scores") is not None:
        scores = np.asarray(answer["scores"], np.float64)
    else:
        ranked = [int(c) for c in answer.get("ranked", [])]
        n = max(ranked + gt + [-1]) + 1
        scores = np.full(n, -np.inf)
        scores[ranked] = -np.arange(len(ranked), dtype=np.float64)
    return {f"recall@{k}x": recall_at_kx(scores, gt, k) for k in ks}


def _score_object(query: Any, answer: Mapping[str, Any], ks: tuple[int, ...]) -> dict:
    gt = _get(query, "gt_boxes", ()) or ()
    tracks = answer.get("tracks")
    if tracks is None:
        tracks = [answer] if "boxes" in answer else []
    rec: dict[str, Any] = {f"recall@{k}x": recall_object(tracks, gt, k) for k in ks}
    rec["viou"] = viou(tracks[0], gt) if tracks and len(_track(gt)[0]) else None
    rec["extent_ratio"] = extent_ratio(answer.get("extent"), gt)
    return rec


def _score_time(query: Any, answer: Mapping[str, Any], ks: tuple[int, ...]) -> dict:
    gt = _get(query, "gt_interval")
    ivs = [tuple(x[:2]) for x in answer.get("intervals", [])]
    rec: dict[str, Any] = {f"recall@{k}x": recall_time(ivs, gt, k) for k in ks}
    rec["tiou"] = tiou(ivs[0], gt) if ivs and gt is not None else None
    return rec


# the ground truth each query type is scored against is the generator's (queries.Query's gt_* fields)
_SCORERS = {"activity": _score_activity, "object": _score_object, "time": _score_time}


def aggregate(records: Iterable[Mapping[str, Any]], ks: Iterable[int] = KS) -> dict:
    """Mean recall per (type, window) over queries (macro over queries), as fractions in [0, 1].

    -> {"recall@1x": {type: {"short": x, "medium": x, "long": x}} for every type of types.py,
        "recall@3x": {...}, "count": {type: {window: n}}}. A cell with no scored query is None;
    records whose recall is None (empty ground truth) are not counted."""
    ks, records = tuple(ks), list(records)
    sums = {k: {t: {w: [] for w in WINDOWS} for t in TYPES} for k in ks}
    for r in records:
        t, w = r.get("type"), r.get("window")
        for k in ks:
            v = r.get(f"recall@{k}x")
            if v is None:
                continue
            sums[k].setdefault(t, {}).setdefault(w, []).append(float(v))
    out: dict[str, Any] = {}
    for k in ks:
        out[f"recall@{k}x"] = {t: {w: (math.fsum(v) / len(v) if v else None) for w, v in ws.items()}
                               for t, ws in sums[k].items()}
    first = ks[0]
    out["count"] = {t: {w: len(v) for w, v in ws.items()} for t, ws in sums[first].items()}
    ratios = {w: [] for w in WINDOWS}
    for r in records:
        if r.get("extent_ratio") is not None:
            ratios.setdefault(r.get("window"), []).append(float(r["extent_ratio"]))
    # object answers' extent against the true track's: median of predicted / true length per window
    out["object_extent_ratio"] = {w: (float(np.median(v)) if v else None) for w, v in ratios.items()}
    return out
