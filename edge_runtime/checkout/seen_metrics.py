"""Scoring "not seen" and confidence from runtime answers (numpy only).

ReST recall says nothing about whether a model knows when it has no evidence. With absent queries
(``absent_queries.py``: truth "not seen") in the set, per query type:

- ``absent_not_seen``: share of absent queries answered with status ``"not_seen"`` (higher is better);
- ``present_not_seen``: share of present queries wrongly answered ``"not_seen"`` (lower is better);
- ``confident_precision``: of the answers that say something (status not ``"not_seen"``) with
  ``confidence >= CONFIDENT``, the share that is right; ``confident`` is how many there were;
- ``ece``: expected calibration error of ``confidence`` against right / wrong over every answer
  that carries one (``ECE_BINS`` equal-width bins, weighted by their share of answers).

An answer is *right* when its query is present and its Recall@1x is 1 (every ground-truth class in
the top |G| for activity queries; the first answer a hit for object and time queries): an absent
query has no right content, which is what the runtime's p(right) is fitted to. Answers without a
``confidence`` (the query heads') leave ``confident_precision`` and ``ece`` as None (n/a), and the
not-seen shares are scored from their status all the same.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .absent_queries import is_absent
from .metrics import TYPES, score_query
from .queries import Query

CONFIDENT = 0.8   # "confident" answers: calibrated p(right) at least this
ECE_BINS = 10
NOT_SEEN = "not_seen"


def is_right(q: Query, answer: Mapping[str, Any]) -> bool:
    """The answer's content is right: a present query with Recall@1x = 1."""
    if is_absent(q):
        return False
    r = score_query(q, answer).get("recall@1x")
    return r is not None and r >= 1.0 - 1e-9


def expected_calibration_error(confidence: Sequence[float], right: Sequence[bool], bins: int = ECE_BINS) -> float | None:
    """Σ_b (n_b / n) · |mean confidence_b − share right_b| over ``bins`` equal-width bins of [0, 1]
    (1.0 falls in the last); None without answers."""
    c = np.asarray(confidence, np.float64).reshape(-1)
    r = np.asarray(right, np.float64).reshape(-1)
    if len(c) != len(r):
        raise ValueError(f"{len(c)} confidences but {len(r)} right/wrong flags")
    if len(c) == 0:
        return None
    if not np.all((c >= 0) & (c <= 1)):
        raise ValueError("confidence must lie in [0, 1]")
    b = np.minimum((c * bins).astype(int), bins - 1)
    err = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            err += m.sum() / len(c) * abs(c[m].mean() - r[m].mean())
    return float(err)


def _share(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def seen_report(queries: Iterable[Query], answers: Iterable[Mapping[str, Any]]) -> dict:
    """Per query type (every type of the table) and ``"all"``: the four measures above and the
    counts they stand on -> {type: {"absent", "present", "absent_not_seen", "present_not_seen",
    "confident", "confident_precision", "with_confidence", "ece"}}."""
    queries, answers = list(queries), list(answers)
    if len(queries) != len(answers):
        raise ValueError(f"{len(queries)} queries but {len(answers)} answers")
    groups: dict[str, list[tuple[Query, Mapping[str, Any]]]] = {t: [] for t in TYPES}
    for q, a in zip(queries, answers):
        groups.setdefault(q.type, []).append((q, a))
    groups["all"] = list(zip(queries, answers))
    return {t: _cell(pairs) for t, pairs in groups.items()}


def _cell(pairs: list[tuple[Query, Mapping[str, Any]]]) -> dict:
    absent = [a.get("status") == NOT_SEEN for q, a in pairs if is_absent(q)]
    present = [a.get("status") == NOT_SEEN for q, a in pairs if not is_absent(q)]
    conf, right, said = [], [], []
    for q, a in pairs:
        c = a.get("confidence")
        if c is None:
            continue
        ok = is_right(q, a)
        conf.append(float(c))
        right.append(ok)
        if a.get("status") != NOT_SEEN and float(c) >= CONFIDENT:
            said.append(ok)
    return {"absent": len(absent), "present": len(present),
            "absent_not_seen": _share(absent), "present_not_seen": _share(present),
            "with_confidence": len(conf), "confident": len(said),
            "confident_precision": _share(said) if conf else None,
            "ece": expected_calibration_error(conf, right)}


def format_seen_table(report: Mapping[str, Mapping[str, Any]]) -> str:
    """The report as a text table, percentages; n/a where a measure has nothing to stand on."""
    f = lambda x: "    n/a" if x is None else f"{100 * x:7.1f}"  # noqa: E731
    lines = [f"{'':10s} {'absent':>6s} {'->not seen':>10s} {'present':>7s} {'->not seen':>10s} "
             f"{'conf>=0.8':>9s} {'precision':>9s} {'ECE':>7s}"]
    for t, r in report.items():
        lines.append(f"{t:10s} {r['absent']:6d} {f(r['absent_not_seen']):>10s} {r['present']:7d} "
                     f"{f(r['present_not_seen']):>10s} {r['confident'] if r['with_confidence'] else 'n/a':>9} "
                     f"{f(r['confident_precision']):>9s} {f(r['ece'])}")
    return "\n".join(lines)
