"""The clip step's host-side parts, shared by the device engine, training and lvm-export's
calibration: which frames make each clip, a clip's tokens laid out as the sampler's inputs, and its
frames folded into the online SVD."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def whole_clips(n_frames: int, clip_frames: int) -> Iterator[tuple[int, slice]]:
    """(clip index, its frames) of every full clip of a stream of ``n_frames`` already at hand (a
    video for training, calibration frames). A trailing partial clip is not a clip: the device
    keeps it pending until more frames arrive, so a reference that streamed it would differ."""
    for c in range(n_frames // clip_frames):
        yield c, slice(c * clip_frames, (c + 1) * clip_frames)


def clip_inputs(tokens: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T frames' tokens (T, P, d) at times (T,) -> the sampler's clip inputs: clip (1, T*P, d), each
    token's frame time clip_t (1, T*P) and its patch clip_p (1, T*P). Training builds the same
    inputs in torch (export/train/streaming.py)."""
    T, P, d = tokens.shape
    return tokens.reshape(1, T * P, d), np.repeat(times, P)[None], np.tile(np.arange(P, dtype=np.int64), T)[None]


def fold_clip(svd, tokens, n_real: int | None = None) -> None:
    """Fold a clip's per-frame mean tokens into the online SVD (only its first ``n_real`` frames:
    a clip padded at the end of a stream). ``tokens`` may be a numpy array for ``OnlineSVD`` or a
    tensor for ``TorchOnlineSVD``: the mean is taken in the tokens' own library, as each caller
    always has."""
    svd.update(tokens[:n_real].mean(axis=1))
