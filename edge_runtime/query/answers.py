"""Turning queries into head inputs and head outputs into answers (numpy; shared by runtime and eval).

The decoder timestamps, boxes and intervals are in slots.py; what each query type is given and how
its answer is read is its row in types.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.query.slots import window_times
from edge_runtime.query.types import BY_ID, BY_NAME, Decoding


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
        q_type=np.array([BY_NAME[t].id for t in types], np.int64),
        q_activity=np.array([a if a is not None else 0 for a in activities], np.int64),
        q_object=obj,
        q_window=np.array(windows, np.float32).reshape(q, 2),
        q_times=q_times,
        q_mask=q_mask,
    )


def decode_answers(batch: HeadBatch, outputs: dict[str, np.ndarray], *, object_fps: float,
                   k: int = 3, box_fps: list[float | None] | None = None,
                   object_extent: bool = True) -> list[dict]:
    """Head outputs for a packed batch -> one answer dict per query, as its type's row decodes it
    (types.py says each answer's fields); ``box_fps``: each query's own box rate, None for the model's
    ``object_fps``; ``object_extent`` False for heads without an extent output."""
    answers = []
    for i, qt in enumerate(batch.q_type.tolist()):
        how = Decoding(object_fps=object_fps, k=k, fps=box_fps[i] if box_fps else None, object_extent=object_extent)
        out = {name: v[i] for name, v in outputs.items()}
        answers.append(BY_ID[qt].decode(out, batch.q_times[i], batch.q_mask[i], batch.q_window[i], how))
    return answers
