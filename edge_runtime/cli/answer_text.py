"""Answers as people read them: a few lines per answer instead of the API's JSON; what the answer
itself says is its type's ``present`` (edge_runtime/query/types.py), around it the window, the
coverage and any warning. Answers of the memory reader also say "not seen (p 0.08)" when it found
no evidence in the window (its best guess follows, marked), else their confidence, and what they
were read from."""
from __future__ import annotations

from typing import Any

from edge_runtime.query.coverage import NOT_SEEN
from edge_runtime.query.types import BY_NAME


def coverage_text(a: dict[str, Any]) -> str:
    """How much of an answer's window the memory covers, its gaps, and whether it was answered in part."""
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
    elif a.get("status") == "not_seen":
        lines.append(f"not seen: {a.get('message') or NOT_SEEN}")
        if a.get("type") in BY_NAME:  # the reader's best guess all the same, marked as such
            lines += ["best guess: " + line for line in BY_NAME[a["type"]].present(a, all_boxes)[:1]]
    elif a.get("type") in BY_NAME:
        lines += BY_NAME[a["type"]].present(a, all_boxes)
    if a.get("status") in ("answered", "partial") and a.get("confidence") is not None:
        lines.append(f"confidence {a['confidence']:.2f} (p seen {a.get('p_seen') or 0.0:.2f}, answered by the "
                     f"{a.get('answered_by', 'reader')})")
        if a.get("seen_by"):  # the reader alone said not seen; the item tracks say otherwise
            lines.append(f"seen: {a['seen_by']}")
    if a.get("read_from"):  # which paths the answer read: the memory, the timeline, the item events
        lines.append("read from: " + ", ".join(a["read_from"]) + (f" (item {a['item']})" if a.get("item") is not None else ""))
    if a.get("ood") and isinstance(a["ood"], dict) and a["ood"].get("flag"):
        lines.append("warning: the recent frames look unlike the training footage; answers may be wrong")
    lines.append(coverage_text(a))
    return "\n".join(lines)
