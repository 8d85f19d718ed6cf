"""Training / evaluation data from the procedural checkout generator.

The backbone is frozen, so each video is rendered once at the model's fps, passed through the
backbone once, and its tokens are cached in memory (float16) for every epoch and every sampler.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.atomic_write import atomic_writer
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


def token_cache_dir() -> Path:
    """Where backbone tokens of generated videos are kept between runs ($LVM_EDGE_CACHE/tokens,
    default ~/.cache/lvm-edge/tokens)."""
    root = os.environ.get("LVM_EDGE_CACHE") or Path.home() / ".cache" / "lvm-edge"
    return Path(root) / "tokens"


def backbone_digest(backbone) -> str:
    h = hashlib.sha256()
    for k, v in sorted(backbone.state_dict().items()):
        h.update(k.encode() + str(tuple(v.shape)).encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_file(cache: Path, backbone_sha: str, data: VideoData) -> Path:
    v = data.video
    key = f"{backbone_sha}|{v.seed}|{v.look}|{v.duration_s!r}|{v.size}|{data.times.tobytes().hex()}"
    return cache / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


@torch.no_grad()
def encode_video(backbone, data: VideoData, keep_frames: bool = False, cache: Path | None = None,
                 backbone_sha: str | None = None) -> VideoData:
    """Backbone tokens of every frame and of every instance crop. With ``cache``, tokens are read
    from / written to a safetensors file keyed by the backbone's weights and the video's identity
    (seed, look, length, size, frame times): a frozen backbone gives the same tokens every run."""
    from safetensors.torch import load_file, save_file

    size = data.video.size
    ids = [inst["instance_id"] for inst in data.annotations["instances"]]
    path = _cache_file(cache, backbone_sha or backbone_digest(backbone), data) if cache is not None else None
    if path is not None and path.is_file():
        try:
            t = load_file(str(path))
            if t["tokens"].shape[0] == len(data.times) and t["crop_ids"].tolist() == ids:
                data.tokens = t["tokens"]
                data.crop_tokens = {i: t["crop_tokens"][j] for j, i in enumerate(ids)}
                if not keep_frames:
                    data.frames = None
                return data
        except Exception:  # a damaged cache file is recomputed and rewritten
            pass
    data.tokens = encode_frames(backbone, data.frames)
    toks = torch.zeros(0, *data.tokens.shape[1:])
    if ids:
        crops = np.stack([data.video.object_crop(i, size=size) for i in ids])
        toks = backbone(torch.from_numpy(crops)).float()
        data.crop_tokens = {i: toks[j] for j, i in enumerate(ids)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as tmp:  # workers may write the same video at once: each its own temp
            save_file({"tokens": data.tokens.contiguous(), "crop_ids": torch.tensor(ids, dtype=torch.int64),
                       "crop_tokens": toks.contiguous()}, str(tmp))
    if not keep_frames:
        data.frames = None
    return data


def attach_queries(data: VideoData, n: int, seed: int) -> VideoData:
    rng = np.random.default_rng(seed)
    data.queries = sample_queries(data.annotations, n, rng)
    return data
