"""Answering with the memory reader: a batch of checked queries of one stream, against the facts of
its last commit, through the bundle's "answer" graph in one call; then each answer judged.

Which answers an engine gives is ``answers``: "reader" (the bundle must carry the reader), "heads"
(the query heads, which re-encode the memory per query), or "auto" (the reader when the bundle has
one). The reader's section of the bundle manifest (``answers.reader``) holds what turns its raw
outputs into answers: the class prior and its weight (activity ranking), and per query type two
monotone calibration curves, p(seen) of the answer's evidence (for time and object answers, of the
evidence on a line for the asked activity: ``seen_model``) and p(right) of the evidence or, for time and
object answers, of a score of the ranked answers' supports and length (``right_model``).

Judging: ``p_seen`` = calibrated p(seen), ``confidence`` = calibrated p(right); a query whose
p(seen) is below its query type's cut (``not_seen_below``) gets status "not_seen" and a message, whatever the coverage
said ("partial" answers keep their ``answered_spans``). The content (scores, intervals, boxes) is
filled in either way, so ranking metrics still score it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends.bundle import BundleError
from edge_runtime.memory.committed import Committed
from edge_runtime.memory.timeline import FACT_NAMES
from edge_runtime.query.coverage import NOT_SEEN, inside_any
from edge_runtime.query.reader_answers import confidence, p_seen as seen_probability, reader_answers
from edge_runtime.query.types import BY_NAME

ANSWER_CHOICES = ("auto", "reader", "heads")


def reader_section(bundle) -> dict[str, Any] | None:
    """The bundle's reader section (manifest answers.reader), or None for a bundle without the reader."""
    return bundle.reader


def answers_kind(bundle, answers: str) -> str:
    """``answers`` ("auto" | "reader" | "heads") for this bundle -> "reader" or "heads". ValueError
    (one line) for an unknown choice, BundleError for "reader" with a bundle that has none."""
    if answers not in ANSWER_CHOICES:
        raise ValueError(f"answers must be one of {', '.join(ANSWER_CHOICES)}, got {answers!r}")
    has = reader_section(bundle) is not None
    if answers == "reader" and not has:
        raise BundleError(f"{bundle.path}: answers 'reader' asked, but this bundle carries no memory reader "
                         f"(export it with a reader file, or use answers heads / auto)")
    return "reader" if answers == "auto" and has else ("heads" if answers == "auto" else answers)


# a fact row is fed when it lies within this many seconds of an asked window (the answer step's own
# window tolerance is half a frame)
ROW_SLACK_S = 1.0
# above this share of the rows a window's rows are not picked out: the graph reads them all
FEED_ALL_ABOVE = 0.6


def window_rows(t: np.ndarray, valid: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    """Indices (in order) of the valid fact rows at times inside any of ``windows`` (+- ROW_SLACK_S).
    Every other row adds nothing to an answer: the answer step masks it out of every score, group
    and box, so answering from these rows alone gives the same answers at a fraction of the cost (a
    5-minute window holds a sixth of the 30-minute timeline's rows). At least one row, so the call has a shape."""
    idx = np.flatnonzero(inside_any(t, windows, ROW_SLACK_S) & (np.asarray(valid) > 0))
    return idx if len(idx) else np.zeros(1, np.int64)


def reader_feed(reqs: list[dict[str, Any]], windows: list[tuple[float, float]], snap: Committed,
                dtypes: dict[str, Any], tokens_shape: tuple[int, int], *, only_windows: bool = False
                ) -> dict[str, np.ndarray]:
    """The answer graph's inputs for ``reqs`` (checked requests with object tokens) over ``windows``
    (their covered parts): one memory's facts, and q_object zeros for a type that takes no object.
    ``only_windows`` (an answer graph with a dynamic row axis): only the fact rows the windows hold."""
    q = len(reqs)
    obj = np.zeros((q,) + tuple(tokens_shape), np.float32)
    for i, r in enumerate(reqs):
        if BY_NAME[r["type"]].takes_object and r["object_tokens"] is not None:
            obj[i] = r["object_tokens"]
    feed = {n: snap.facts[n] for n in FACT_NAMES}
    if snap.fact_t is not None:  # memory rows, then the timeline's
        feed["mem_t"], feed["mem_valid"] = snap.fact_t, snap.fact_valid
    else:
        feed["mem_t"], feed["mem_valid"] = snap.memory["mem_t"][0], snap.memory["mem_valid"][0]
    if only_windows:
        pick = window_rows(feed["mem_t"], feed["mem_valid"], windows)
        if len(pick) < FEED_ALL_ABOVE * len(feed["mem_t"]):  # a copy costs more than the rows it saves
            feed = {k: v[pick] for k, v in feed.items()}
    feed.update(q_type=np.array([BY_NAME[r["type"]].id for r in reqs], np.int64),
                q_activity=np.array([r["activity"] if r["activity"] is not None and BY_NAME[r["type"]].takes_activity
                                     else 0 for r in reqs], np.int64),
                q_object=obj, q_window=np.array(windows, np.float32).reshape(q, 2))
    return {k: np.asarray(v).astype(dtypes[k], copy=False) for k, v in feed.items()}


def read_out(reqs: list[dict[str, Any]], q_window: np.ndarray, outputs: dict[str, np.ndarray],
             section: dict[str, Any], object_fps: float) -> list[dict[str, Any]]:
    """Answer-graph outputs (a row per request) -> answer dicts (edge_runtime/query/reader_answers.py),
    object boxes at each query's own rate (its ``fps``, else the model's), time answers cut to the
    query's ``k``. ``q_window`` (Q, 2): each request's window as the graph was fed it."""
    out = {k: np.asarray(v, np.float32) for k, v in outputs.items()}
    q_window = np.asarray(q_window).astype(np.float64)
    answers = []
    for i, r in enumerate(reqs):
        a = reader_answers([r["type"]], q_window[i : i + 1], out["activity_scores"][i : i + 1],
                           out["intervals"][i : i + 1], out["keyboxes"][i : i + 1],
                           object_fps=r["fps"] or object_fps, prior=section["prior"],
                           prior_weight=float(section["prior_weight"]),
                           prior_weight_by_window=section.get("prior_weight_by_window"))[0]
        if r["type"] == "time":
            a["intervals"] = a["intervals"][: r["k"]]
        answers.append(a)
    return answers


def tracks_read(snap: Committed, window: tuple[float, float]) -> list[str]:
    """Which tracks an answer over ``window`` read: the memory always, the timeline when it holds
    tokens inside the window (a window older than its horizon is the memory's alone)."""
    span = snap.timeline_span
    if span is None or window[1] < span[0] or window[0] > span[1]:
        return ["memory"]
    return ["memory", "timeline"]


def not_seen_below(section: dict[str, Any], qtype: str) -> float:
    """The p(seen) under which a ``qtype`` answer says "not seen": its calibration's own (chosen on the
    calibration videos, export/train/reader_calibration.py), else the section's one for all types."""
    return float(section["calibration"][qtype].get("not_seen_below", section["not_seen_below"]))


def judge(answer: dict[str, Any], qtype: str, evidence: float, intervals, section: dict[str, Any],
          window_s: float | None = None, activity: int | None = None) -> dict[str, Any]:
    """p_seen (from the evidence, and for object and time answers their asked ``activity``), confidence
    (as its calibration says, ``confidence``: from the evidence, the ranked ``intervals`` (K, 3) the
    answer step gave, or an activity answer's scores and its window of ``window_s`` seconds, which an
    activity model needs) and, below ``not_seen_below(section, qtype)``, status "not_seen" with its message."""
    cal = section["calibration"][qtype]
    p_seen = float(seen_probability([evidence], cal, None if activity is None else [activity])[0])
    answer["p_seen"] = round(p_seen, 6)
    scores = [answer["scores"]] if qtype == "activity" else None
    answer["confidence"] = round(float(confidence([evidence], np.asarray(intervals)[None], cal, scores=scores,
                                                  window_s=None if window_s is None else [window_s])[0]), 6)
    cut = not_seen_below(section, qtype)
    if p_seen < cut:
        answer["status"] = "not_seen"
        # p_seen is calibrated where one question in five is about something absent: a cut above 0.5
        # (chosen so few present things are called absent) needs saying beside it
        answer["message"] = f"{NOT_SEEN} (p seen {p_seen:.2f}, under the {cut:.2f} {qtype} answers need)"
    return answer
