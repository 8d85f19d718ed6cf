"""Training / evaluation data from the procedural checkout generator.

The backbone is frozen, so each video is rendered once at the model's fps, passed through the
backbone once, and its tokens are cached in memory (float16) for every epoch and every sampler.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.checkout import CheckoutVideo, Query, sample_queries


@dataclass
class VideoData:
    video: CheckoutVideo
    annotations: dict
    times: np.ndarray                 # (N,) frame timestamps (s) at the model fps
    frames: np.ndarray | None = None  # (N, S, S, 3) uint8, dropped once tokens exist
    tokens: torch.Tensor | None = None  # (N, P, d) float16
    crop_tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # instance -> (P, d) float32
    queries: list[Query] = field(default_factory=list)

    @property
    def video_id(self) -> str:
        return self.annotations["video_id"]


def render_video(seed: int, duration_s: float, size: int, fps: float, look: int | None = None,
                 progress: bool = False) -> VideoData:
    video = CheckoutVideo(seed=seed, duration_s=duration_s, size=size, look=look)
    times, frames = [], []
    it = video.frames(fps)
    n = int(np.floor(duration_s * fps + 1e-9))
    for t, img in tqdm(it, total=n, desc=f"render seed {seed}", disable=not progress, leave=False):
        times.append(t)
        frames.append(img)
    return VideoData(video=video, annotations=video.annotations(), times=np.asarray(times, np.float64),
                     frames=np.stack(frames))


@torch.no_grad()
def encode_frames(backbone, frames: np.ndarray, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(frames), batch):
        out.append(backbone(torch.from_numpy(frames[i : i + batch])).to(torch.float16))
    return torch.cat(out)


@torch.no_grad()
def encode_video(backbone, data: VideoData, keep_frames: bool = False) -> VideoData:
    size = data.video.size
    data.tokens = encode_frames(backbone, data.frames)
    ids = [inst["instance_id"] for inst in data.annotations["instances"]]
    if ids:
        crops = np.stack([data.video.object_crop(i, size=size) for i in ids])
        toks = backbone(torch.from_numpy(crops)).float()
        data.crop_tokens = {i: toks[j] for j, i in enumerate(ids)}
    if not keep_frames:
        data.frames = None
    return data


def attach_queries(data: VideoData, n: int, seed: int) -> VideoData:
    rng = np.random.default_rng(seed)
    data.queries = sample_queries(data.annotations, n, rng)
    return data
