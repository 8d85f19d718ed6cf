"""The clip step's two host-side halves, shared by the device engine and lvm-export's calibration:
a clip's tokens laid out as the sampler's inputs, and its frames folded into the online SVD."""
from __future__ import annotations

import numpy as np

from edge_runtime.memory.svd import OnlineSVD


def clip_inputs(tokens: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T frames' tokens (T, P, d) at times (T,) -> the sampler's clip inputs: clip (1, T*P, d), each
    token's frame time clip_t (1, T*P) and its patch clip_p (1, T*P). Training builds the same
    inputs in torch (export/train/streaming.py)."""
    T, P, d = tokens.shape
    return tokens.reshape(1, T * P, d), np.repeat(times, P)[None], np.tile(np.arange(P, dtype=np.int64), T)[None]


def fold_clip(svd: OnlineSVD, tokens: np.ndarray, n_real: int | None = None) -> None:
    """Fold a clip's per-frame mean tokens into the online SVD (only its first ``n_real`` frames:
    a clip padded at the end of a stream)."""
    svd.update(tokens[:n_real].mean(axis=1))
