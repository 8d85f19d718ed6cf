"""Turning queries into head inputs and head outputs into answers (numpy; shared by runtime and eval).

The heads see each asked window through L decoder timestamps: the window's frames at the model's
fps, thinned evenly to at most ``window_queries``. Answers are read back at any time resolution:
boxes are interpolated between those timestamps, intervals are ranked pairs of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUERY_TYPE_IDS = {"activity": 0, "object": 1, "time": 2}


def window_times(start: float, end: float, fps: float, max_queries: int) -> np.ndarray:
    """Decoder timestamps for [start, end]: every 1/fps, evenly thinned to <= max_queries (>= 2)."""
    if not end > start:
        raise ValueError(f"window end ({end}) must be after start ({start})")
    n = int(np.floor((end - start) * fps)) + 1
    n = int(min(max(n, 2), max(max_queries, 2)))
    return np.linspace(start, end, n, dtype=np.float64)


@dataclass
class HeadBatch:
    """Head inputs for Q queries (memory and SVD inputs are added by the caller)."""
    q_type: np.ndarray      # (Q,) int64
    q_activity: np.ndarray  # (Q,) int64
    q_object: np.ndarray    # (Q, P, d) float32
    q_window: np.ndarray    # (Q, 2) float32
    q_times: np.ndarray     # (Q, L) float32
    q_mask: np.ndarray      # (Q, L) float32

    def as_feed(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("q_type", "q_activity", "q_object", "q_window", "q_times", "q_mask")}


HEADS_CALL_BUDGET = 1 << 30  # bytes of activations one heads call may take


def heads_rows_per_call(cfg, budget: int = HEADS_CALL_BUDGET, most: int = 64) -> int:
    """How many query rows one heads call may carry. Every row attends over its own copy of the
    memory (plus crop, query and SVD tokens), so a call's activations grow as rows x heads x n^2:
    measured on ONNX Runtime CPU, about 2.5 score matrices of 4-byte floats stay alive per row
    (lvm-tiny, n = 452: ~9 MB a row; lvm-edge, n = 3,000: ~0.7 GB a row, so 64 rows of it would
    want ~45 GB). 3 copies are budgeted."""
    n = cfg.stream.memory_tokens + cfg.backbone.tokens_per_frame + 1 + cfg.svd.n_components
    per_row = 3 * cfg.heads.heads * n * n * 4
    return max(1, min(most, budget // per_row))


def encode_queries(types: list[str], windows: list[tuple[float, float]], activities: list[int | None],
                   object_tokens: list[np.ndarray | None], *, fps: float, max_queries: int,
                   tokens_shape: tuple[int, int]) -> HeadBatch:
    """Pack Q queries; missing activity / object inputs become zeros (the graph ignores them by type)."""
    q = len(types)
    times = [window_times(s, e, fps, max_queries) for s, e in windows]
    L = max(len(t) for t in times)
    q_times = np.zeros((q, L), np.float32)
    q_mask = np.zeros((q, L), np.float32)
    for i, t in enumerate(times):
        q_times[i, : len(t)] = t
        q_times[i, len(t):] = t[-1]
        q_mask[i, : len(t)] = 1.0
    obj = np.zeros((q,) + tuple(tokens_shape), np.float32)
    for i, o in enumerate(object_tokens):
        if o is not None:
            obj[i] = o
    return HeadBatch(
        q_type=np.array([QUERY_TYPE_IDS[t] for t in types], np.int64),
        q_activity=np.array([a if a is not None else 0 for a in activities], np.int64),
        q_object=obj,
        q_window=np.array(windows, np.float32).reshape(q, 2),
        q_times=q_times,
        q_mask=q_mask,
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def boxes_at(q_times: np.ndarray, boxes: np.ndarray, mask: np.ndarray, at: np.ndarray) -> np.ndarray:
    """One query's boxes (L, 4) at decoder times -> (len(at), 4) by linear interpolation."""
    valid = mask > 0
    t, b = q_times[valid], boxes[valid]
    return np.stack([np.interp(at, t, b[:, j]) for j in range(4)], axis=1)


def slot_spacing(q_times: np.ndarray, mask: np.ndarray) -> float:
    """Seconds between a query's decoder timestamps (they are evenly spaced)."""
    t = q_times[mask > 0].astype(np.float64)
    return float((t[-1] - t[0]) / (len(t) - 1)) if len(t) > 1 else 0.0


def ranked_intervals(q_times: np.ndarray, start_logits: np.ndarray, end_logits: np.ndarray,
                     mask: np.ndarray, k: int) -> list[tuple[float, float, float]]:
    """Top-k (start, end, probability) from one query's start/end logits, start slot <= end slot.

    A slot stands for the span of one slot spacing around its timestamp, so the interval from slot
    i to slot j is [t_i - Δ/2, t_j + Δ/2] clipped to the window: never zero-length (a one-slot
    answer in a 30-minute window is ~14 s, not an instant no event can match)."""
    valid = mask > 0
    t = q_times[valid].astype(np.float64)
    half = slot_spacing(q_times, mask) / 2
    ls, le = start_logits[valid].astype(np.float64), end_logits[valid].astype(np.float64)
    ps = np.exp(ls - ls.max()); ps /= ps.sum()
    pe = np.exp(le - le.max()); pe /= pe.sum()
    joint = np.triu(ps[:, None] * pe[None, :])
    order = np.argsort(joint, axis=None)[::-1][:k]
    out = []
    for flat in order:
        i, j = np.unravel_index(flat, joint.shape)
        out.append((max(float(t[i]) - half, float(t[0])), min(float(t[j]) + half, float(t[-1])),
                    float(joint[i, j])))
    return out


def decode_answers(batch: HeadBatch, outputs: dict[str, np.ndarray], *, object_fps: float,
                   k: int = 3, box_fps: list[float | None] | None = None,
                   object_extent: bool = True) -> list[dict]:
    """Head outputs for a packed batch -> one answer dict per query.

    activity: {"scores": sigmoid per class id, "ranked": class ids best first}
    object:   {"extent": [start, end, p], "times": frames at ``object_fps`` (or the query's own fps)
               inside the extent, "boxes": [[x1,y1,x2,y2]] at those times}; heads without an extent
               output (``object_extent`` False) answer at every frame of the window and extent None
    time:     {"intervals": [[start, end, p], ...]} top-k
    """
    answers = []
    for i, qt in enumerate(batch.q_type.tolist()):
        mask = batch.q_mask[i]
        if qt == QUERY_TYPE_IDS["activity"]:
            scores = sigmoid(outputs["activity_logits"][i].astype(np.float64))
            answers.append({"scores": scores.tolist(), "ranked": np.argsort(-scores, kind="stable").tolist()})
        elif qt == QUERY_TYPE_IDS["object"]:
            fps = (box_fps[i] if box_fps and box_fps[i] else None) or object_fps
            s, e = (float(x) for x in batch.q_window[i])
            at = s + np.arange(int(np.floor((e - s) * fps + 1e-9)) + 1) / fps
            extent = None
            if object_extent:
                lo, hi, p = ranked_intervals(batch.q_times[i], outputs["start_logits"][i],
                                             outputs["end_logits"][i], mask, 1)[0]
                inside = (at >= lo - 1e-9) & (at <= hi + 1e-9)
                # an extent shorter than a frame still names the frame nearest its middle
                at = at[inside] if inside.any() else at[[int(np.abs(at - (lo + hi) / 2).argmin())]]
                extent = [lo, hi, p]
            b = boxes_at(batch.q_times[i], outputs["boxes"][i], mask, at)
            answers.append({"extent": extent, "times": at.tolist(), "boxes": np.clip(b, 0.0, 1.0).tolist()})
        else:
            answers.append({"intervals": [list(x) for x in ranked_intervals(
                batch.q_times[i], outputs["start_logits"][i], outputs["end_logits"][i], mask, k)]})
    return answers
