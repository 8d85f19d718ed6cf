"""Answers as people read them: a few lines per answer instead of the API's JSON.

An object answer over 30 minutes is thousands of boxes; the summary says where the object was seen
(its extent) and shows the first, middle and last box; ``--boxes`` lists every box."""
from __future__ import annotations

from typing import Any


def _box(b: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in b) + "]"


def _coverage(a: dict[str, Any]) -> str:
    cov = a.get("coverage") or {}
    if cov.get("start") is None:
        return "memory: nothing for this window"
    text = f"memory covers {cov['start']:.1f}–{cov['end']:.1f} s ({100 * cov['covered_fraction']:.0f} % of the window)"
    if a.get("gaps"):
        text += "; gaps " + ", ".join(f"{g0:.1f}–{g1:.1f} s" for g0, g1 in a["gaps"])
    if a.get("status") == "partial":
        text += "; answered from the covered part only"
    return text


def answer_text(a: dict[str, Any], *, all_boxes: bool = False) -> str:
    """One API answer (as /v1/query/* returns it) -> readable lines."""
    lo, hi = a.get("window", [None, None])
    head = f"{a.get('type', '?')} query, window {lo:g}–{hi:g} s" if lo is not None else f"{a.get('type', '?')} query"
    if a.get("activity") is not None:
        head += f", activity {a['activity']}"
    lines = [head]
    if a.get("status") == "no_memory":
        lines.append(f"no answer: {a.get('message', 'nothing in memory for this window')}")
    elif a.get("type") == "activity":
        scores = a.get("scores") or {}
        lines.append("activities, best first: " + ", ".join(f"{n} {scores.get(n, 0):.2f}" for n in a.get("labels", [])[:5]))
    elif a.get("type") == "object":
        times, boxes = a.get("times", []), a.get("boxes", [])
        ext = a.get("extent")
        if ext:
            lines.append(f"seen {ext[0]:.1f}–{ext[1]:.1f} s (p {ext[2]:.2f}), {len(boxes)} box(es) x1 y1 x2 y2 in [0, 1]")
        else:
            lines.append(f"{len(boxes)} box(es), one per frame of the window (this bundle gives no extent)")
        shown = range(len(boxes)) if all_boxes else sorted({0, len(boxes) // 2, len(boxes) - 1} - {-1})
        for i in shown:
            lines.append(f"  {times[i]:8.1f} s  {_box(boxes[i])}")
        if not all_boxes and len(boxes) > 3:
            lines.append("  (--boxes lists all of them, --json gives the answer as JSON)")
    elif a.get("type") == "time":
        ivs = a.get("intervals", [])
        lines.append("when, best first: " + (", ".join(f"{s:.1f}–{e:.1f} s (p {p:.2f})" for s, e, p in ivs) or "none"))
    if a.get("ood") and isinstance(a["ood"], dict) and a["ood"].get("flag"):
        lines.append("warning: the recent frames look unlike the training footage; answers may be wrong")
    lines.append(_coverage(a))
    return "\n".join(lines)
