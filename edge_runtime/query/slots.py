"""The heads' time slots (numpy only): the decoder timestamps of an asked window, boxes between
them, and intervals as ranked pairs of them.

The heads see each asked window through L decoder timestamps: the window's frames at the model's
fps, thinned evenly to at most ``window_queries``. Answers are read back at any time resolution:
boxes are interpolated between those timestamps, intervals are ranked pairs of them.
"""
from __future__ import annotations

import numpy as np


def window_times(start: float, end: float, fps: float, max_queries: int) -> np.ndarray:
    """Decoder timestamps for [start, end]: every 1/fps, evenly thinned to <= max_queries (>= 2)."""
    if not end > start:
        raise ValueError(f"window end ({end}) must be after start ({start})")
    n = int(np.floor((end - start) * fps)) + 1
    n = int(min(max(n, 2), max(max_queries, 2)))
    return np.linspace(start, end, n, dtype=np.float64)


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
