"""The timeline track of a whole video, as the runtime builds it clip by clip, for calibration and
evaluation in PyTorch: each clip's frames cut into reader rows and thinned to the tokens of highest
event logit by the runtime's own functions (edge_runtime/memory/timeline.py), so what is calibrated
here is what the device reads.

One simplification: every clip is read with one SVD state (the caller's, e.g. the video's last),
where the runtime reads each clip with the state of its own commit.
"""
from __future__ import annotations

import numpy as np
import torch

from edge_runtime.backends.bundle import LONGEST_WINDOW_S
from edge_runtime.memory.timeline import (
    FACT_NAMES,
    TimelineSpec,
    check_horizon,
    clip_rows,
    select,
)

# two tokens per frame: against one, time R@1x 63.2 / 51.8 / 41.1 vs 59.6 / 50.0 / 32.1 on the held-out
# set, activity and object no lower; three gave no more (docs/accuracy.md)
PER_FRAME = 2
READER_CALL_BUDGET = 1 << 30  # bytes of attention one reader call over timeline rows may take


def reader_rows_per_call(cfg, heads: int, budget: int = READER_CALL_BUDGET, most: int = 32) -> int:
    """How many timeline rows one reader call may carry. Each row attends over its m tokens and the
    SVD tokens, so a call's activations grow as rows x heads x n^2: about 4 score matrices of 4-byte
    floats per row stay alive (lvm-edge, n = 2,950, 4 heads: 30 rows in one call peaked at 15.7 GB,
    which with the reader stage's videos beside it passed 24 GB; lvm-tiny's rows are ~10 MB each)."""
    n = cfg.stream.memory_tokens + cfg.svd.n_components
    return max(1, min(most, budget // (4 * heads * n * n * 4)))


def default_timeline(cfg, horizon_s: float = LONGEST_WINDOW_S, per_frame: int = PER_FRAME) -> TimelineSpec:
    """The timeline the reader stage trains and calibrates for: 30 minutes, PER_FRAME tokens per frame."""
    check_horizon(horizon_s, LONGEST_WINDOW_S)
    return TimelineSpec(per_frame=per_frame, horizon_s=float(horizon_s), fps=cfg.stream.fps,
                        memory_tokens=cfg.stream.memory_tokens, tokens_per_frame=cfg.backbone.tokens_per_frame)


@torch.no_grad()
def video_timeline(reader, tokens: torch.Tensor, times: np.ndarray, basis: torch.Tensor, sv: torch.Tensor, cfg,
                   spec: TimelineSpec, call_budget: int = READER_CALL_BUDGET) -> dict[str, torch.Tensor]:
    """Every full clip of ``tokens`` (N, P, d) at ``times`` (N,) -> the timeline tokens the runtime
    would have pushed: fact name -> (n, ...) and "t" (n,), in time order. ``basis`` (1, r, d), ``sv`` (1, r).
    ``call_budget``: bytes of attention one reader call may take (``reader_rows_per_call``)."""
    T = cfg.stream.clip_frames
    n_clips = len(times) // T
    clips = [clip_rows(tokens[c * T:(c + 1) * T].float().numpy(), np.asarray(times[c * T:(c + 1) * T]), T, spec)
             for c in range(n_clips)]
    if not clips:
        return {n: torch.zeros(0) for n in (*FACT_NAMES, "t")}
    rows = {k: np.concatenate([c[k] for c in clips]) for k in clips[0]}
    outs = []
    per_call = reader_rows_per_call(cfg, reader.rc.heads, call_budget)
    for i in range(0, len(rows["mem"]), per_call):
        part = {k: torch.from_numpy(v[i:i + per_call]) for k, v in rows.items()}
        b = part["mem"].shape[0]
        outs.append(reader(part["mem"], part["mem_t"], part["mem_p"], part["mem_valid"], basis.expand(b, -1, -1),
                           sv.expand(b, -1)))
    facts = {n: torch.cat([o[j] for o in outs]).numpy() for j, n in enumerate(FACT_NAMES)}
    per_clip = len(clips[0]["mem"])
    picked = []
    for c, clip in enumerate(clips):
        sl = slice(c * per_clip, (c + 1) * per_clip)
        picked.append(select({n: facts[n][sl] for n in FACT_NAMES}, clip, spec))
    return {k: torch.from_numpy(np.concatenate([p[k] for p in picked])) for k in picked[0]}


def window_tokens(track: dict[str, torch.Tensor], end_s: float, horizon_s: float) -> dict[str, torch.Tensor]:
    """What the FIFO holds when the stream has reached ``end_s``: the tokens of the last ``horizon_s``."""
    t = track["t"]
    keep = (t < end_s) & (t >= end_s - horizon_s)
    return {k: v[keep] for k, v in track.items()}
