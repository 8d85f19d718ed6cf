"""A memory reader's answers, read out (numpy; shared by the runtime, export and evaluation).

The answer step (export/model/reader.py, the bundle's ``answer`` graph) gives per query: activity
scores, ranked intervals with their support, boxes at keyframes and the best answer's raw evidence.
Here they become the runtime's answer dicts, and the evidence becomes probabilities through monotone
maps fitted on calibration videos: p(seen) decides "not seen", p(right) is the answer's confidence.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends.calibration_format import ACTIVITY_FEATURES
from edge_runtime.query.types import box_track, interval


def prior_weight_for(window_s: float, weight: float, by_window=None) -> float:
    """The class prior's weight for a window of ``window_s`` seconds: from ``by_window``
    ([[window_s, weight], ...], fitted per window length on calibration videos) the entry whose
    length is nearest on a log scale; ``weight`` (one for all windows) without it."""
    if not by_window:
        return float(weight)
    lengths = np.array([float(w) for w, _ in by_window])
    near = int(np.abs(np.log(lengths) - np.log(max(float(window_s), 1e-3))).argmin())
    return float(by_window[near][1])


def reader_answers(q_types: list[str], q_windows, act_scores, intervals, keyboxes, *, object_fps: float,
                   prior=None, prior_weight: float = 1e-4, prior_weight_by_window=None) -> list[dict]:
    """Answer-step outputs (numpy) -> ReST answer dicts, as ``edge_runtime.query.answers`` writes them.
    ``prior`` (C,): the training class frequency, added with ``prior_weight`` (fitted on calibration
    videos; per window length with ``prior_weight_by_window``, see ``prior_weight_for``): at 1e-4 a
    tie-break, so a query with no matching token ranks like the no-video baseline rather than by class
    index; larger where the evidence is weaker than what the prior knows (long windows, where most
    products go through the common activities)."""
    out = []
    for i, qt in enumerate(q_types):
        if qt == "activity":
            sc = act_scores[i].astype(np.float64)
            if prior is not None:
                w = prior_weight_for(float(q_windows[i][1] - q_windows[i][0]), prior_weight, prior_weight_by_window)
                sc = sc + w * np.asarray(prior, np.float64)
            out.append({"scores": sc.tolist(), "ranked": np.argsort(-sc, kind="stable").tolist()})
        elif qt == "time":
            out.append({"intervals": [interval(a, b, p) for a, b, p in intervals[i]]})
        else:
            s, e = (float(x) for x in q_windows[i])
            # the window's frames at the box rate, once a query: each ranked answer takes those in its interval
            frames = s + np.arange(int(np.floor((e - s) * object_fps + 1e-9)) + 1) / object_fps
            tracks = []
            for k, (lo, hi, p) in enumerate(np.asarray(intervals[i], np.float64).tolist()):
                first = int(np.searchsorted(frames, lo - 1e-9, side="left"))
                end = int(np.searchsorted(frames, hi + 1e-9, side="right"))
                at = frames[first:end] if end > first else frames[[int(np.abs(frames - (lo + hi) / 2).argmin())]]
                b = _interp_boxes(at, np.linspace(lo, hi, keyboxes.shape[2]), keyboxes[i, k])
                tracks.append({**box_track(at, b), "extent": interval(lo, hi, p)})
            out.append({"tracks": tracks, "times": tracks[0]["times"], "boxes": tracks[0]["boxes"],
                        "extent": tracks[0]["extent"]})
    return out


def _interp_boxes(at: np.ndarray, kt: np.ndarray, kb: np.ndarray) -> np.ndarray:
    """Boxes (S, 4) at keyframe times ``kt`` (ascending) linearly interpolated to times ``at`` -> (len(at), 4),
    held at the first / last keyframe outside them: np.interp's result, for the four coordinates at once
    (this runs for every ranked answer of every object query a request asks)."""
    kb = np.asarray(kb, np.float64)
    j = np.clip(np.searchsorted(kt, at, side="right") - 1, 0, len(kt) - 2)
    gap = kt[j + 1] - kt[j]
    # where keyframes coincide, a time at or past them takes the later one (as np.interp does)
    f = np.divide(at - kt[j], gap, out=(at >= kt[j + 1]).astype(np.float64), where=gap > 0)
    f = np.clip(f, 0.0, 1.0)[:, None]
    return kb[j] + (kb[j + 1] - kb[j]) * f


def calibrated(evidence, fit) -> np.ndarray:
    """Probability from raw evidence through a fitted monotone map (``fit_calibration``)."""
    xs, ys = fit
    return np.interp(np.asarray(evidence, np.float64), xs, ys)


def fit_calibration(evidence, target, min_block: int = 20) -> list[list[float]]:
    """Isotonic fit (pool adjacent violators) of a 0/1 ``target`` on the evidence: monotone, robust to
    evidence that saturates at 0 or 1 (where a logistic fit on logit(evidence) broke down). Blocks of
    fewer than ``min_block`` answers are merged into a neighbour: a rate from 5 answers is +-0.2, and
    5 of 5 right at the saturated top of the evidence read as "certain". -> [[x...], [p...]] for np.interp."""
    e = np.asarray(evidence, np.float64)
    y = np.asarray(target, np.float64)
    if len(e) == 0:
        return [[0.0, 1.0], [0.5, 0.5]]
    o = np.argsort(e, kind="stable")
    blocks: list[list[float]] = []  # [sum y, count, sum x]

    def pool(small) -> None:  # merge the last block into the one before while they violate the order or are small
        while len(blocks) > 1 and (blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1] or small()):
            b = blocks.pop()
            blocks[-1] = [blocks[-1][0] + b[0], blocks[-1][1] + b[1], blocks[-1][2] + b[2]]

    for xv, yv in zip(e[o], y[o]):
        blocks.append([yv, 1.0, xv])
        pool(lambda: blocks[-2][1] < min_block)
    # the highest block too: left alone, the last few answers (one, at the saturated top of the evidence)
    # made a block of their own, and one right answer there read as "certain"
    pool(lambda: blocks[-1][1] < min_block)
    xs = [b[2] / b[1] for b in blocks]
    ps = [b[0] / b[1] for b in blocks]
    if len(xs) == 1:
        xs, ps = [xs[0] - 1e-6, xs[0] + 1e-6], ps * 2
    return [xs, ps]


def right_features(intervals) -> np.ndarray:
    """Answer-step intervals (Q, K, 3) [start, end, support], ranked -> (Q, 3) RIGHT_FEATURES
    (edge_runtime/backends/calibration_format.py: what they are and why)."""
    iv = np.asarray(intervals, np.float64)
    nxt = iv[:, 1, 2] if iv.shape[1] > 1 else np.zeros(len(iv))
    return np.stack([iv[:, 0, 2], nxt, np.log1p(np.maximum(iv[:, 0, 1] - iv[:, 0, 0], 0.0))], axis=1)


def activity_features(evidence, scores, window_s) -> np.ndarray:
    """Activity answers' evidence (Q,), their ranked answers' ``scores`` (Q, C) as the answer dicts
    give them, and their windows' lengths (Q,) -> (Q, 4) ACTIVITY_FEATURES."""
    sc = -np.sort(-np.asarray(scores, np.float64).reshape(len(np.atleast_1d(evidence)), -1), axis=1)
    nxt = sc[:, 1] if sc.shape[1] > 1 else np.zeros(len(sc))
    return np.stack([np.asarray(evidence, np.float64).reshape(-1), sc[:, 0], nxt,
                     np.log1p(np.maximum(np.asarray(window_s, np.float64).reshape(-1), 0.0))], axis=1)


# p(seen) of an object or time answer reads its evidence on its asked activity's own line (intercept and
# slope on the logit): activities' tokens support them unequally (a present browse's evidence sits near
# 0.3-0.5, a present scan's near 0.95, an absent hand-over's near 0.8), so one curve for every activity
# drops present browses or lets absent hand-overs through. Fitted with the rest of the calibration
# (export/train/reader_calibration.py, ``fit_seen_model``); what it catches: docs/accuracy.md#not-seen.
def evidence_logit(evidence) -> np.ndarray:
    """The logit of evidence in [0, 1] (Q,), kept finite at 0 and 1: what a seen_model's lines read."""
    e = np.clip(np.asarray(evidence, np.float64).reshape(-1), 1e-6, 1.0 - 1e-6)
    return np.log(e / (1.0 - e))


def seen_score(evidence, activity, model: dict) -> np.ndarray:
    """A seen_model's score of answers' ``evidence`` (Q,) for their asked ``activity`` ids (Q,) -> (Q,)."""
    lines = np.asarray(model["by_activity"], np.float64)
    a = np.clip(np.asarray(activity, np.int64).reshape(-1), 0, len(lines) - 1)
    return lines[a, 0] + lines[a, 1] * evidence_logit(evidence)


def p_seen(evidence, fit: dict, activity=None) -> np.ndarray:
    """Calibrated p(seen) of answers of one query type. ``fit``: its calibration: with a "seen_model"
    (object and time answers; it reads each answer's asked ``activity``) its curve of the model's
    score, else the "seen" curve of the raw evidence."""
    model = fit.get("seen_model")
    if model is None:
        return np.clip(calibrated(evidence, fit["seen"]), 0.0, 1.0)
    if activity is None:
        raise ValueError("an object or time answer's p(seen) reads its asked activity")
    return np.clip(calibrated(seen_score(evidence, activity, model), model["seen"]), 0.0, 1.0)


def model_score(features, model: dict) -> np.ndarray:
    """A right_model's linear score of its feature rows (Q, F) -> (Q,)."""
    return np.asarray(features, np.float64) @ np.asarray(model["weights"], np.float64) + float(model["bias"])


def confidence(evidence, intervals, fit: dict, scores=None, window_s=None) -> np.ndarray:
    """Calibrated p(right) of each answer. ``fit``: one query type's calibration: with a "right_model"
    (fitted on calibration videos) its curve of the model's score, else the "right" curve of the raw
    evidence of an activity answer (``scores`` given) or the best interval's support of the others
    (calibrations fitted before the model). An activity model reads the answers' ``scores``
    (Q, C) and ``window_s`` (Q,) beside the evidence; the others the ranked ``intervals``."""
    model = fit.get("right_model")
    if model is None:
        base = evidence if scores is not None else np.asarray(intervals, np.float64)[:, 0, 2]
        return np.clip(calibrated(base, fit["right"]), 0.0, 1.0)
    if model["features"] == list(ACTIVITY_FEATURES):
        if scores is None or window_s is None:
            raise ValueError("an activity answer's confidence reads its scores and window length")
        x = activity_features(evidence, scores, window_s)
    else:
        x = right_features(intervals)
    return np.clip(calibrated(model_score(x, model), model["right"]), 0.0, 1.0)
