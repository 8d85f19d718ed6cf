"""Which part of an asked window the committed memory covers, and answers held to that part.

The memory covers the stream from its first committed frame to the end of its last committed clip,
minus the gaps the source reported (outages, stalls). A query is answered from the covered spans
only: a window with none gets a typed "nothing in memory" answer (no scores, no boxes), a window
partly covered is answered over its covered part and says so. The heads never see times the
memory cannot speak for, such as a window reaching before the stream began.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

NO_MEMORY = "nothing in memory for this window"
NOT_SEEN = "no evidence of this in memory for the window"  # the memory reader's not_seen answers


class CoveredStream(Protocol):
    start: float | None
    end: float | None
    gaps: tuple[tuple[float, float], ...] | list[tuple[float, float]]


def covered_spans(snap: CoveredStream, start: float, end: float) -> list[tuple[float, float]]:
    """The parts of [start, end] inside the memory's [start, end] and outside every gap, in order."""
    if snap.start is None or snap.end is None:
        return []
    lo, hi = max(start, snap.start), min(end, snap.end)
    if hi <= lo:
        return []
    spans, cur = [], lo
    for a, b in sorted(snap.gaps):
        if b <= cur or a >= hi:
            continue
        if a > cur:
            spans.append((cur, a))
        cur = max(cur, b)
    if cur < hi:
        spans.append((cur, hi))
    return spans


def window_coverage(snap: CoveredStream, start: float, end: float,
                    spans: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """-> {"coverage": {start, end, covered_fraction}, "gaps": [[a, b], ...] inside the window};
    ``spans``: the window's covered spans when the caller has them already."""
    gaps = [[max(a, start), min(b, end)] for a, b in snap.gaps if b > start and a < end]
    spans = covered_spans(snap, start, end) if spans is None else spans
    if not spans:
        return {"coverage": {"start": None, "end": None, "covered_fraction": 0.0}, "gaps": gaps}
    covered = sum(b - a for a, b in spans)
    return {"coverage": {"start": spans[0][0], "end": spans[-1][1],
                         "covered_fraction": round(covered / (end - start), 6)}, "gaps": gaps}


def no_memory_answer() -> dict[str, Any]:
    """The typed answer for a window the memory does not cover at all."""
    return {"status": "no_memory", "message": NO_MEMORY}


def inside_any(times, spans, slack: float = 0.0) -> np.ndarray:
    """Per time, whether it lies in any of ``spans`` [(start, end), ...] widened by ``slack`` seconds."""
    t = np.asarray(times, np.float64).reshape(-1, 1)
    w = np.asarray(spans, np.float64).reshape(1, -1, 2)
    return ((t >= w[..., 0] - slack) & (t <= w[..., 1] + slack)).any(axis=1)


def hold_to_spans(answer: dict[str, Any], spans: list[tuple[float, float]], asked: tuple[float, float]) -> dict:
    """Keep only what the covered spans support and say whether the window was answered in part.

    Object boxes in a gap are dropped (the memory saw nothing there); a time interval is clipped to
    the covered part of the window; activity scores already come from the covered part alone."""
    eps = 1e-6

    def held(track: dict) -> None:
        times = track["times"]  # ascending
        if not times or (len(spans) == 1 and spans[0][0] - eps <= times[0] and times[-1] <= spans[0][1] + eps):
            return
        inside = inside_any(track["times"], spans, eps)
        if inside.all():
            return
        keep = np.flatnonzero(inside).tolist()
        track["times"] = [track["times"][i] for i in keep]
        track["boxes"] = [track["boxes"][i] for i in keep]

    if "times" in answer:
        held(answer)
    for track in answer.get("tracks", []):  # the reader's ranked object answers, each held alike
        held(track)
    if "intervals" in answer:
        lo, hi = spans[0][0], spans[-1][1]
        answer["intervals"] = [[max(s, lo), min(e, hi), *rest] for s, e, *rest in answer["intervals"]
                               if min(e, hi) > max(s, lo)]
    whole = abs(spans[0][0] - asked[0]) < eps and abs(spans[-1][1] - asked[1]) < eps and len(spans) == 1
    answer["status"] = "answered" if whole else "partial"
    if not whole:
        answer["answered_spans"] = [[a, b] for a, b in spans]
    return answer
