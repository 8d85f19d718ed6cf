"""What a bundle's reader calibration must hold (manifest ``answers.reader.calibration``), checked when
the bundle opens: its curves, and right and seen models that read features this runtime computes
(edge_runtime/query/reader_answers.py computes them, export/train/reader_calibration.py fits them).
"""
from __future__ import annotations

import numpy as np

# p(right) of a time or object answer reads more than its support (the evidence): how close the next
# ranked answer's support comes (two candidate events alike: either may be the asked one) and how
# long the answer's interval is (a few-frame interval seldom overlaps the truth by tIoU 0.3). Right vs
# wrong time answers on 16 held-out videos of each of seeds 0, 1, 2: docs/lab/accuracy.md#choosing-pright.
# An event of "what happened" keeps the support's own curve ("right"): a close runner-up there is often
# a second real event, not a doubt about the first.
RIGHT_FEATURES = ("support", "next_support", "log1p_length_s")
# An activity answer's evidence says whether the product was seen, not whether its ranking is right: a
# product seen clearly with two activities scored alike is a coin toss. So its p(right) reads the top
# two scores of the ranking (prior included) and the window's length too.
ACTIVITY_FEATURES = ("evidence", "top_score", "next_score", "log1p_window_s")
FEATURES_OF = {"activity": ACTIVITY_FEATURES, "object": RIGHT_FEATURES, "time": RIGHT_FEATURES}


def is_curve(c) -> bool:
    """A calibration curve [[x...], [p...]]: two equally long, non-empty lists of numbers."""
    return (isinstance(c, list) and len(c) == 2 and all(isinstance(v, list) and v for v in c)
            and len(c[0]) == len(c[1]) and all(isinstance(x, (int, float)) for v in c for x in v))


def right_model_problem(model, qtype: str) -> str | None:
    """What is wrong with a ``qtype`` calibration's "right_model" (None: nothing, or no model)."""
    if model is None:
        return None
    num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)  # noqa: E731
    want = list(FEATURES_OF[qtype])
    if not isinstance(model, dict) or model.get("features") != want:
        return f"right_model must read the features {want} (this runtime knows no others for {qtype} answers)"
    w, curve, n = model.get("weights"), model.get("right"), len(model["features"])
    if not (isinstance(w, list) and len(w) == n and all(num(x) for x in w) and num(model.get("bias"))):
        return f"right_model needs {n} finite weights and a finite bias"
    if not (is_curve(curve) and all(num(x) for v in curve for x in v)):
        return "right_model needs its right curve ([[score...], [p...]])"
    return None


def seen_model_problem(model, qtype: str, n_activities: int) -> str | None:
    """What is wrong with a ``qtype`` calibration's "seen_model" (None: nothing, or no model)."""
    if model is None:
        return None
    if qtype == "activity":
        return "seen_model is for object and time answers (an activity question names no activity)"
    num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)  # noqa: E731
    lines = model.get("by_activity") if isinstance(model, dict) else None
    if not (isinstance(lines, list) and len(lines) == n_activities
            and all(isinstance(p, list) and len(p) == 2 and all(num(x) for x in p) for p in lines)):
        return f"seen_model needs an [intercept, slope] pair for each of the model's {n_activities} activities"
    if not (is_curve(model.get("seen")) and all(num(x) for v in model["seen"] for x in v)):
        return "seen_model needs its seen curve ([[score...], [p...]])"
    return None
