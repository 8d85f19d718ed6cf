"""Checking a query request before it reaches the heads: one line naming what is wrong, never a
traceback. Activities are taken by name (the bundle's labels) or by id."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_runtime.query.types import BY_NAME

MAX_ANSWER_POINTS = 100_000  # object-query boxes per answer


class QueryError(ValueError):
    """A request the engine cannot answer as asked; the message is one line."""


def window_problem(start: float, end: float) -> str | None:
    """What is wrong with the window [start, end] in stream seconds, in a few words; None if nothing
    (queries and what happened check their windows alike)."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return "start and end must be finite"
    if not end > start:
        return f"start ({start:g}) must be before end ({end:g})"
    return None


def activity_id(labels: list[str], activity: Any) -> int:
    """An activity given by id or by name -> id (QueryError when unknown)."""
    if isinstance(activity, bool):
        raise QueryError(f"activity must be a name or an id, got {activity!r}")
    if isinstance(activity, (int, np.integer)):
        if not 0 <= int(activity) < len(labels):
            raise QueryError(f"activity id {int(activity)} out of range 0..{len(labels) - 1}")
        return int(activity)
    if isinstance(activity, str):
        key = activity.strip().lower()
        for i, name in enumerate(labels):
            if name.lower() == key:
                return i
        if key.isdigit():
            return activity_id(labels, int(key))
        raise QueryError(f"unknown activity '{activity}' (known: {', '.join(labels)})")
    raise QueryError(f"activity must be a name or an id, got {type(activity).__name__}")

def check_request(req: dict[str, Any], where: str, *, labels: list[str], tokens_shape: tuple[int, int],
              object_fps: float) -> dict[str, Any]:
    """Validate one request; returns it normalised (QueryError on anything wrong)."""
    if not isinstance(req, dict):
        raise QueryError(f"{where}: must be an object")
    qtype = req.get("type")
    row = BY_NAME.get(qtype) if isinstance(qtype, str) else None
    if row is None:
        raise QueryError(f"{where}: type must be one of {', '.join(BY_NAME)}, got {qtype!r}")
    try:
        start, end = float(req["start"]), float(req["end"])
    except KeyError as err:
        raise QueryError(f"{where}: missing '{err.args[0]}'") from None
    except (TypeError, ValueError):
        raise QueryError(f"{where}: start and end must be numbers (seconds)") from None
    problem = window_problem(start, end)
    if problem:
        raise QueryError(f"{where}: {problem}")
    act = req.get("activity")
    act = activity_id(labels, act) if act is not None else None
    img, tok = req.get("object_image"), req.get("object_tokens")
    if img is not None:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
            raise QueryError(f"{where}: object_image must be an (H, W, 3) uint8 RGB image")
    if tok is not None:
        tok = np.asarray(tok, np.float32)
        if tok.shape != tuple(tokens_shape):
            raise QueryError(f"{where}: object_tokens must be {tuple(tokens_shape)}, got {tok.shape}")
    fps = req.get("fps")
    if fps is not None:
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise QueryError(f"{where}: fps must be a number") from None
        if not (math.isfinite(fps) and fps > 0):
            raise QueryError(f"{where}: fps must be positive")
    fps_eff = fps or object_fps
    asked = (end - start) * fps_eff
    if "fps" in row.options and asked > MAX_ANSWER_POINTS:
        n = f"{asked:.0f}" if math.isfinite(asked) else "more than can be counted"
        raise QueryError(f"{where}: {n} boxes asked; at most {MAX_ANSWER_POINTS} "
                         f"per query (lower fps or shorten the window)")
    k = req.get("k")
    k = 3 if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= 100:
        raise QueryError(f"{where}: k must be an integer in 1..100")
    return {"type": qtype, "start": start, "end": end, "activity": act, "object_image": img,
            "object_tokens": tok, "fps": fps, "k": int(k)}
