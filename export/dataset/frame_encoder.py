"""The frozen backbone's tokens of many frames, computed by ONNX Runtime.

Training and evaluation pass every frame of every video through the frozen backbone once, which on
2 CPU cores is the largest part of preparing a video. ONNX Runtime runs the same graph 1.7-1.9x
faster than PyTorch eager there (lvm-tiny, 1,800 frames: 6.0 against 10.3-11.9 s), and it is what
the device runs. The backbone is exported once per process and per set of weights (5 s for
lvm-tiny); its tokens differ from PyTorch's by float rounding (lvm-tiny: at most 0.004 on values up
to 10, under float16's step there), so both share the token cache. A backbone that does not export
is run by PyTorch, after one line saying why.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

BATCH = 64  # frames a call


class FrameEncoder:
    """frames (N, S, S, 3) uint8 -> tokens (N, P, d) (float16 unless ``dtype`` says otherwise: a
    video's tokens are kept in float16), through ``session`` (ONNX Runtime) or, without one,
    ``backbone`` itself."""

    def __init__(self, backbone, session=None) -> None:
        self.backbone, self.session = backbone, session

    @torch.no_grad()
    def __call__(self, frames: np.ndarray, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        out = []
        for i in range(0, len(frames), BATCH):
            part = np.ascontiguousarray(frames[i:i + BATCH])
            if self.session is not None:
                out.append(torch.from_numpy(self.session.run(None, {"frames": part})[0]).to(dtype))
            else:
                out.append(self.backbone(torch.from_numpy(part)).to(dtype))
        return torch.cat(out) if out else torch.zeros(0, self.backbone.cfg.tokens_per_frame,
                                                      self.backbone.cfg.dim, dtype=dtype)


_last: tuple[str, FrameEncoder] | None = None  # one backbone is frozen at a time: keep its encoder


def frame_encoder(backbone, backbone_sha: str) -> FrameEncoder:
    """The encoder of ``backbone`` (weights digest ``backbone_sha``), exported on first use."""
    global _last
    if _last is None or _last[0] != backbone_sha:
        _last = (backbone_sha, FrameEncoder(backbone, _session(backbone)))
    return _last[1]


def _session(backbone):
    from edge_runtime.backends.onnxruntime import create_session
    from export.onnx.graphs import BACKBONE, export_module

    s = backbone.cfg.image_size
    was = backbone.training
    backbone.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_module(backbone, (torch.zeros(2, s, s, 3, dtype=torch.uint8),), BACKBONE,
                                 Path(tmp) / "backbone.onnx")
            # the session holds the graph in memory: the file may go
            return create_session(path, threads=torch.get_num_threads())[0]
    except Exception as err:  # exporter and runtime errors come in many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        print(f"lvm-edge: backbone {backbone.cfg.name} runs in PyTorch here (its ONNX export failed: {first})",
              file=sys.stderr)
        return None
    finally:
        backbone.train(was)
