"""Long-short masked contrastive learning (LSMCL, Selective S4 §3.3): pre-training of the S5 sampler's
S4 encoder before it learns to select.

Each pair is a long view (``train.lsmcl_long_clips`` clips) and a short view (one clip inside it) of the
same stream, each with a random share ``train.lsmcl_mask`` of its tokens masked (zeroed). The query
encoder embeds one view, a momentum copy of it (MoCo-style key encoder) the other, and InfoNCE with
temperature rho asks each query to find its own key among the batch's. Long and short take turns as
query and key, so the short view learns to predict the longer context it will later stream through.
Both views start from an empty state: the encoder learns to summarise from what it sees.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export.dataset.video_data import VideoData
from export.model.s5_sampler import S4Encoder


class _Embed(nn.Module):
    """S4 encoder + projection: a view's tokens (B, L*P, dim) and keep mask (B, L*P) -> unit vectors."""

    def __init__(self, encoder: S4Encoder, dim_out: int = 128) -> None:
        super().__init__()
        d = encoder.d
        self.encoder = encoder
        self.proj = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, dim_out))

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        feats, _ = self.encoder(tokens * keep[..., None], self.encoder.empty_state(tokens.shape[0]))
        pooled = (feats * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return F.normalize(self.proj(pooled), dim=-1)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """q, k (B, D) unit vectors; row i of k is q_i's positive, every other row a negative."""
    logits = q @ k.T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0]))


def sample_views(videos: list[VideoData], batch: int, T: int, long_clips: int, mask: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """-> (short tokens, short keep, long tokens, long keep); tokens (B, frames*P, dim) frame-major."""
    L = T * long_clips
    shorts, longs = [], []
    for _ in range(batch):
        v = videos[int(rng.integers(len(videos)))]
        s = int(rng.integers(0, len(v.times) - L + 1))
        o = s + int(rng.integers(0, L - T + 1))
        longs.append(v.tokens[s : s + L].float())
        shorts.append(v.tokens[o : o + T].float())
    lt, st = torch.stack(longs), torch.stack(shorts)                     # (B, frames, P, dim)
    lt, st = lt.reshape(batch, -1, lt.shape[-1]), st.reshape(batch, -1, st.shape[-1])
    keep_l = torch.from_numpy((rng.random(lt.shape[:2]) >= mask).astype(np.float32))
    keep_s = torch.from_numpy((rng.random(st.shape[:2]) >= mask).astype(np.float32))
    return st, keep_s, lt, keep_l


def pretrain_lsmcl(encoder: S4Encoder, videos: list[VideoData], out_dir: Path, *, steps: int, batch: int,
                   clip_frames: int, long_clips: int, mask: float, temperature: float, momentum: float,
                   lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Trains ``encoder`` in place; logs every step to OUT/lsmcl_log.jsonl; -> summary."""
    L = clip_frames * long_clips
    usable = [v for v in videos if len(v.times) >= L]
    if not usable:
        raise ValueError(f"LSMCL needs videos of at least {L} frames (train.lsmcl_long_clips x clip_frames)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed * 13 + 5)
    online = _Embed(encoder)
    key = copy.deepcopy(online).requires_grad_(False)
    opt = torch.optim.AdamW(online.parameters(), lr=lr, weight_decay=1e-4)
    t0, last = time.time(), {}
    with open(Path(out_dir) / "lsmcl_log.jsonl", "a") as log:
        for step in tqdm(range(steps), desc="LSMCL pre-training", disable=not progress, leave=False):
            st, ks, lt, kl = sample_views(usable, batch, clip_frames, long_clips, mask, rng)
            # the long and the short view take turns as query and key
            (qx, qm), (kx, km) = ((st, ks), (lt, kl)) if step % 2 == 0 else ((lt, kl), (st, ks))
            q = online(qx, qm)
            with torch.no_grad():
                k = key(kx, km)
            loss = info_nce(q, k, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(online.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                for pk, pq in zip(key.parameters(), online.parameters()):
                    pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)
            with torch.no_grad():
                acc = float((q @ k.T).argmax(1).eq(torch.arange(batch)).float().mean())
            last = {"step": step + 1, "loss": round(float(loss.detach()), 4), "top1": round(acc, 3),
                    "query": "short" if step % 2 == 0 else "long", "time_s": round(time.time() - t0, 1)}
            log.write(json.dumps(last) + "\n")
    return {"steps": steps, "seconds": round(time.time() - t0, 1), "last": last}
