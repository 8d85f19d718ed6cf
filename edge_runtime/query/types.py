"""The query types, one row each: everything that lists, asks, answers, scores or shows a query type
reads this table (the API's routes and bodies, ``lvm-edge query``, ``ask``, the page through
/v1/labels, the generator, the metrics and the evaluation tables).

A row says what a query of its type is given, how the heads' outputs for it become an answer, how
the answers for several catalog pictures of one product merge into one (by_product.py), and how an
answer reads as text. A new type is a row here and its head in the graphs.

numpy and the slot helpers only: the generator (edge_runtime.checkout) reads the names from here,
so nothing above the query stage may be imported.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edge_runtime.query.slots import boxes_at, ranked_intervals, sigmoid

GIVEN = ("activity", "object", "window")  # what a query can carry: an activity, an object (crop or product), a window
OPTIONS = ("fps", "k")                     # request fields that shape an answer, beyond what it is given


@dataclass(frozen=True)
class Decoding:
    """How one query's answer is read back: the model's box rate, the intervals wanted, the query's
    own box rate (None: the model's) and whether the heads give an object extent."""
    object_fps: float
    k: int = 3
    fps: float | None = None
    object_extent: bool = True


# decode(outputs of this query's row, decoder times (L,), their mask (L,), window (2,), Decoding) -> answer
Decode = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, Decoding], dict[str, Any]]


@dataclass(frozen=True)
class QueryType:
    name: str
    id: int                        # the heads' q_type
    given: tuple[str, ...]         # of GIVEN, in the order a missing one is reported
    options: tuple[str, ...]       # of OPTIONS
    asks: str                      # "what happened to a product": for errors and route descriptions
    reads: str                     # "what happened to {object}": a reading of a query, {activity} / {object} filled in
    decode: Decode
    present: Callable[[dict[str, Any], bool], list[str]]   # API answer, all boxes? -> lines people read
    combine: Callable[[list[dict[str, Any]], int], dict[str, Any]] | None = None  # per-picture answers, k -> merged fields
    combine_rule: str | None = None
    labelled: Callable[[dict[str, Any], list[str]], dict[str, Any]] | None = None  # class ids -> label names (API)

    @property
    def takes_activity(self) -> bool:
        return "activity" in self.given

    @property
    def takes_object(self) -> bool:
        return "object" in self.given

    def describe(self) -> dict[str, Any]:
        """The row as JSON (what the page reads from /v1/labels)."""
        return {"name": self.name, "id": self.id, "given": list(self.given), "options": list(self.options),
                "asks": self.asks, "reads": self.reads}


# -- activity: which activities happened to this object in the window --------------------------------
def _decode_activity(out, times, mask, window, how: Decoding) -> dict[str, Any]:
    """{"scores": sigmoid per class id, "ranked": class ids best first}"""
    scores = sigmoid(out["activity_logits"].astype(np.float64))
    return {"scores": scores.tolist(), "ranked": np.argsort(-scores, kind="stable").tolist()}


def _combine_activity(answers: list[dict[str, Any]], k: int) -> dict[str, Any]:
    if not all("scores" in a for a in answers):
        return {}
    scores = np.max(np.asarray([a["scores"] for a in answers], np.float64), axis=0)
    return {"scores": scores.tolist(), "ranked": np.argsort(-scores, kind="stable").tolist()}


def _labelled_activity(a: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    if "ranked" not in a:
        return {}
    # scores keyed by name: a list in label-id order beside names in ranked order reads as if they matched
    return {"scores": {labels[i]: s for i, s in enumerate(a["scores"])}, "labels": [labels[i] for i in a["ranked"]]}


def _present_activity(a: dict[str, Any], all_boxes: bool) -> list[str]:
    scores = a.get("scores") or {}
    return ["activities, best first: " + ", ".join(f"{n} {scores.get(n, 0):.2f}" for n in a.get("labels", [])[:5])]


# Answers go out with boxes (fractions of the frame) to 4 decimals, a tenth of a pixel at 1,000 px,
# and times to the millisecond: every float64 digit would make a batch of 8 object answers 86 kB of JSON.
BOX_DECIMALS, TIME_DECIMALS, P_DECIMALS = 4, 3, 6


def box_track(at: np.ndarray, boxes: np.ndarray) -> dict[str, list]:
    """Times (n,) and boxes (n, 4) as an answer carries them: lists, rounded, boxes clipped to the frame."""
    return {"times": np.round(at, TIME_DECIMALS).tolist(),
            "boxes": np.round(np.clip(boxes, 0.0, 1.0), BOX_DECIMALS).tolist()}


def interval(lo: float, hi: float, p: float) -> list[float]:
    """[start, end, p] as an answer carries it."""
    return [round(float(lo), TIME_DECIMALS), round(float(hi), TIME_DECIMALS), round(float(p), P_DECIMALS)]


# -- object: where the object of this activity was, a box per frame ----------------------------------
def _decode_object(out, times, mask, window, how: Decoding) -> dict[str, Any]:
    """{"extent": [start, end, p], "times": frames at the query's box rate inside the extent, "boxes":
    [[x1, y1, x2, y2]] at those times}; heads without an extent answer at every frame, extent None."""
    fps = how.fps or how.object_fps
    s, e = (float(x) for x in window)
    at = s + np.arange(int(np.floor((e - s) * fps + 1e-9)) + 1) / fps
    extent = None
    if how.object_extent:
        lo, hi, p = ranked_intervals(times, out["start_logits"], out["end_logits"], mask, 1)[0]
        inside = (at >= lo - 1e-9) & (at <= hi + 1e-9)
        # an extent shorter than a frame still names the frame nearest its middle
        at = at[inside] if inside.any() else at[[int(np.abs(at - (lo + hi) / 2).argmin())]]
        extent = interval(lo, hi, p)
    return {"extent": extent, **box_track(at, boxes_at(times, out["boxes"], mask, at))}


def _box(b: list[float]) -> str:
    return "[" + " ".join(f"{v:.2f}" for v in b) + "]"


def _present_object(a: dict[str, Any], all_boxes: bool) -> list[str]:
    times, boxes = a.get("times", []), a.get("boxes", [])
    ext = a.get("extent")
    if ext:
        lines = [f"seen {ext[0]:.1f}–{ext[1]:.1f} s (p {ext[2]:.2f}), {len(boxes)} box(es) x1 y1 x2 y2 in [0, 1]"]
    else:
        lines = [f"{len(boxes)} box(es), one per frame of the window (this bundle gives no extent)"]
    # an object answer over 30 minutes is thousands of boxes: first, middle and last unless all are asked
    shown = range(len(boxes)) if all_boxes else sorted({0, len(boxes) // 2, len(boxes) - 1} - {-1})
    lines += [f"  {times[i]:8.1f} s  {_box(boxes[i])}" for i in shown]
    if not all_boxes and len(boxes) > 3:
        lines.append("  (--boxes lists all of them, --json gives the answer as JSON)")
    return lines


# -- time: when this activity happened to this object, top-k intervals -------------------------------
def _decode_time(out, times, mask, window, how: Decoding) -> dict[str, Any]:
    """{"intervals": [[start, end, p], ...]}, the top k."""
    return {"intervals": [interval(*x) for x in ranked_intervals(times, out["start_logits"], out["end_logits"],
                                                                 mask, how.k)]}


SAME_EVENT_TIOU = 0.5   # two pictures' intervals this alike are one event read twice


def _combine_time(answers: list[dict[str, Any]], k: int) -> dict[str, Any]:
    if not all("intervals" in a for a in answers):
        return {}
    # best first; an interval that is mostly one already kept is the same event seen through another
    # picture (its edges a few ms apart): kept once, so the k places go to different events
    kept: list[list] = []
    for iv in sorted((list(iv) for a in answers for iv in a["intervals"]), key=lambda iv: -iv[2]):
        if all(iv[:2] != other[:2] and tiou(iv, other) <= SAME_EVENT_TIOU for other in kept):
            kept.append(iv)
        if len(kept) == k:
            break
    return {"intervals": kept}


def tiou(pred: Sequence, gt: Sequence) -> float:
    """Temporal IoU of [s, e] intervals. A reversed interval has zero length; two zero-length
    intervals have an empty union and score 0 (even when equal)."""
    ps, pe = float(pred[0]), float(pred[1])
    gs, ge = float(gt[0]), float(gt[1])
    inter = max(0.0, min(pe, ge) - max(ps, gs))
    union = max(0.0, pe - ps) + max(0.0, ge - gs) - inter
    return inter / union if union > 0 else 0.0


def _present_time(a: dict[str, Any], all_boxes: bool) -> list[str]:
    ivs = a.get("intervals", [])
    return ["when, best first: " + (", ".join(f"{s:.1f}–{e:.1f} s (p {p:.2f})" for s, e, p in ivs) or "none")]


QUERY_TYPES: tuple[QueryType, ...] = (
    QueryType("activity", 0, given=("object", "window"), options=(),
              asks="what happened to a product", reads="what happened to {object}",
              decode=_decode_activity, present=_present_activity, combine=_combine_activity,
              combine_rule="per-class max score over the product's pictures", labelled=_labelled_activity),
    QueryType("object", 1, given=("activity", "window"), options=("fps",),
              asks="where the object of an activity was", reads="where was the object of {activity}",
              decode=_decode_object, present=_present_object),
    QueryType("time", 2, given=("activity", "object", "window"), options=("k",),
              asks="when something happened", reads="when did {activity} happen to {object}",
              decode=_decode_time, present=_present_time, combine=_combine_time,
              combine_rule="intervals of all pictures pooled, best probability first (one overlapping another by "
                           "tIoU > 0.5 kept once)"),
)
NAMES: tuple[str, ...] = tuple(t.name for t in QUERY_TYPES)
BY_NAME: dict[str, QueryType] = {t.name: t for t in QUERY_TYPES}
BY_ID: dict[int, QueryType] = {t.id: t for t in QUERY_TYPES}
