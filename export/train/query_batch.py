"""Query objects -> head inputs and training targets (torch), through the runtime's own encoder."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edge_runtime.query.answers import encode_queries
from edge_runtime.query.types import BY_NAME, QUERY_TYPES
from edge_runtime.checkout import Query
from edge_runtime.config import ModelConfig


@dataclass
class QueryBatch:
    inputs: dict[str, torch.Tensor]     # q_type, q_activity, q_object, q_window, q_times, q_mask
    act_target: torch.Tensor            # (Q, C) multi-hot
    box_target: torch.Tensor            # (Q, L, 4)
    box_mask: torch.Tensor              # (Q, L) 1 where a ground-truth box exists at that time
    start_idx: torch.Tensor             # (Q,) decoder slot nearest the true start (time queries; object
                                        # queries: the first box of the track, their extent)
    end_idx: torch.Tensor               # (Q,)
    is_type: torch.Tensor               # (Q, number of query types) one-hot of the query type id


def _interp_boxes(gt: np.ndarray, times: np.ndarray, slack: float) -> tuple[np.ndarray, np.ndarray]:
    """gt (G, 5) rows (t, x1, y1, x2, y2) -> boxes at ``times`` and a mask of times inside the track."""
    out = np.zeros((len(times), 4), np.float32)
    mask = np.zeros(len(times), np.float32)
    if len(gt) == 0:
        return out, mask
    inside = (times >= gt[0, 0] - slack) & (times <= gt[-1, 0] + slack)
    for j in range(4):
        out[:, j] = np.interp(times, gt[:, 0], gt[:, 1 + j])
    mask[inside] = 1.0
    return out, mask


def build_query_batch(queries: list[Query], crop_tokens: list[dict[int, torch.Tensor]], cfg: ModelConfig) -> QueryBatch:
    """``crop_tokens[i]`` maps instance ids of query i's video to their (P, d) crop tokens."""
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    objs = []
    for q, crops in zip(queries, crop_tokens):
        given = BY_NAME[q.type].takes_object and q.instance_id is not None
        objs.append(crops[q.instance_id].float().numpy() if given else None)
    hb = encode_queries([q.type for q in queries], [(q.start, q.end) for q in queries],
                        [q.activity_id if BY_NAME[q.type].takes_activity else None for q in queries], objs,
                        fps=cfg.stream.fps, max_queries=cfg.heads.window_queries, tokens_shape=(P, d))
    Q, L = hb.q_times.shape
    C = cfg.heads.num_activities
    act = np.zeros((Q, C), np.float32)
    boxes = np.zeros((Q, L, 4), np.float32)
    bmask = np.zeros((Q, L), np.float32)
    s_idx = np.zeros(Q, np.int64)
    e_idx = np.zeros(Q, np.int64)
    slack = 0.5 / cfg.stream.object_fps
    for i, q in enumerate(queries):
        n = int(hb.q_mask[i].sum())
        t = hb.q_times[i, :n].astype(np.float64)
        if q.type == "activity":
            act[i, list(q.gt_activities)] = 1.0
        elif q.type == "object":
            gt = np.asarray(q.gt_boxes, np.float64).reshape(-1, 5)
            b, mk = _interp_boxes(gt, t, slack)
            boxes[i, :n], bmask[i, :n] = b, mk
            if len(gt):
                s_idx[i] = int(np.abs(t - gt[0, 0]).argmin())
                e_idx[i] = int(np.abs(t - gt[-1, 0]).argmin())
        elif q.type == "time":
            s, e = q.gt_interval
            s_idx[i] = int(np.abs(t - s).argmin())
            e_idx[i] = int(np.abs(t - e).argmin())
    inputs = {k: torch.from_numpy(v) for k, v in hb.as_feed().items()}
    return QueryBatch(inputs=inputs, act_target=torch.from_numpy(act), box_target=torch.from_numpy(boxes),
                      box_mask=torch.from_numpy(bmask), start_idx=torch.from_numpy(s_idx),
                      end_idx=torch.from_numpy(e_idx),
                      is_type=torch.nn.functional.one_hot(inputs["q_type"], len(QUERY_TYPES)).float())
