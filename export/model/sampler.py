"""Neural sampler: keeps the m most useful of (memory + clip) tokens.

Scores come from a transformer encoder over all m + k tokens with spatial and temporal encodings
added in the graph. Training selects through the relaxed Gumbel top-k (Xie & Ermon 2019) with a
straight-through estimator; inference is a deterministic TopK + Gather, done in chunks of at most
``topk_chunk`` so every TopK's K fits TensorRT's limit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edge_runtime.config import ModelConfig
from export.model.encodings import spatial_encoding, temporal_encoding
from export.model.layers import MASK_NEG, EncoderLayer

EPS = 1e-20


def relaxed_khot(keys: torch.Tensor, k: int, tau: float) -> torch.Tensor:
    """Continuous k-hot (sums to k) of the last axis: k rounds of softmax, each damping what the
    previous rounds took. Tends to the hard top-k as tau -> 0."""
    # float64: the backward pass through log(1 - a) grows like 1/(1 - a) over k rounds and
    # overflows float32 once the scores separate.
    cur = keys.to(torch.float64)
    khot = torch.zeros_like(cur)
    onehot = torch.zeros_like(cur)
    for _ in range(k):
        cur = cur + torch.log((1.0 - onehot).clamp_min(EPS))
        onehot = torch.softmax(cur / tau, dim=-1)
        khot = khot + onehot
    return khot.to(keys.dtype)


def relaxed_topk(scores: torch.Tensor, k: int, tau: float, noise: bool = True,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed Gumbel top-k with a straight-through estimator.

    Returns (select, idx): ``select`` (B, N) equals the hard k-hot in value and carries the relaxed
    k-hot's gradient; ``idx`` (B, k) are the hard indices, best first.
    """
    keys = scores
    if noise:
        u = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=scores.dtype)
        keys = scores - torch.log((-torch.log(u.clamp_min(EPS))).clamp_min(EPS))
    khot = relaxed_khot(keys, k, tau)
    idx = torch.topk(keys, k, dim=-1).indices
    hard = torch.zeros_like(keys).scatter(-1, idx, 1.0)
    select = hard + khot - khot.detach()
    return select, idx


def chunked_topk(scores: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Indices of the top k (best first) using TopKs of K <= chunk.

    Each round takes the best of what is left and masks it out, so the union of the rounds is the
    exact top-k set; the chunk sizes are constants, as TensorRT wants.
    """
    if k <= chunk:
        return torch.topk(scores, k, dim=-1).indices
    picked = []
    left = scores
    remaining = k
    while remaining > 0:
        c = min(chunk, remaining)
        idx = torch.topk(left, c, dim=-1).indices
        picked.append(idx)
        left = left.scatter(-1, idx, float("-inf"))
        remaining -= c
    return torch.cat(picked, dim=-1)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, ...) , idx (B, k) -> (B, k, ...)."""
    if x.ndim == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class NeuralSampler(nn.Module):
    has_state = False  # everything it carries from clip to clip is the memory itself

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sc = cfg.sampler
        self.m = cfg.stream.memory_tokens
        self.chunk = sc.topk_chunk
        self.fps, self.max_video_s, self.grid = cfg.stream.fps, cfg.stream.max_video_s, cfg.backbone.grid
        self.d_model = sc.d_model
        self.inp = nn.Sequential(nn.LayerNorm(cfg.backbone.dim), nn.Linear(cfg.backbone.dim, sc.d_model))
        self.source = nn.Embedding(2, sc.d_model)  # 0 = already in memory, 1 = new clip token
        self.layers = nn.ModuleList(
            EncoderLayer(sc.d_model, sc.heads, sc.ff_mult, sc.dropout) for _ in range(sc.layers))
        self.norm = nn.LayerNorm(sc.d_model)
        self.score = nn.Linear(sc.d_model, 1)
        self.tau = sc.tau_start

    def scores(self, tokens, times, patches, valid, source) -> torch.Tensor:
        """(B, N, d), (B, N), (B, N), (B, N), (B, N) -> scores (B, N); invalid tokens score far below."""
        x = self.inp(tokens)
        x = x + temporal_encoding(times, self.d_model, self.fps, self.max_video_s)
        x = x + spatial_encoding(patches, self.d_model, self.grid)
        x = x + self.source(source)
        for layer in self.layers:
            x = layer(x)  # no mask: invalid tokens are context, they just can't be kept
        s = self.score(self.norm(x)).squeeze(-1)
        return s + (1.0 - valid) * MASK_NEG

    def _concat(self, mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p):
        tokens = torch.cat([mem, clip], dim=1)
        times = torch.cat([mem_t, clip_t], dim=1)
        patches = torch.cat([mem_p, clip_p], dim=1)
        valid = torch.cat([mem_valid, torch.ones_like(clip_t)], dim=1)
        source = torch.cat([torch.zeros_like(mem_p), torch.ones_like(clip_p)], dim=1)
        return tokens, times, patches, valid, source

    def forward(self, mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p):
        """Inference: deterministic top-m. Shapes: mem (B,m,d), mem_t (B,m) s, mem_p (B,m) int64,
        mem_valid (B,m) 0/1 float, clip (B,k,d), clip_t (B,k), clip_p (B,k) int64.
        Returns the new (mem, mem_t, mem_p, mem_valid)."""
        tokens, times, patches, valid, source = self._concat(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p)
        s = self.scores(tokens, times, patches, valid, source)
        idx = chunked_topk(s, self.m, self.chunk)
        return (gather_tokens(tokens, idx), gather_tokens(times, idx),
                gather_tokens(patches, idx), gather_tokens(valid, idx))

    def forward_train(self, mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p,
                      generator: torch.Generator | None = None):
        """Training: relaxed Gumbel top-m at the current temperature ``self.tau``; gradients reach the
        scores through the kept tokens (value x 1, gradient from the relaxation).
        Returns the new memory tuple and the scores (B, m + k) of every candidate token, memory first."""
        tokens, times, patches, valid, source = self._concat(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p)
        s = self.scores(tokens, times, patches, valid, source)
        select, idx = relaxed_topk(s, self.m, self.tau, noise=True, generator=generator)
        weight = gather_tokens(select, idx)
        kept = gather_tokens(tokens, idx) * weight[..., None]
        return (kept, gather_tokens(times, idx), gather_tokens(patches, idx), gather_tokens(valid, idx)), s

    def set_temperature(self, progress: float, tau_start: float, tau_end: float) -> float:
        self.tau = cosine_tau(progress, tau_start, tau_end)
        return self.tau


def cosine_tau(progress: float, tau_start: float, tau_end: float) -> float:
    """Temperature annealed from tau_start to tau_end as training progress goes 0 -> 1 (cosine)."""
    p = min(max(progress, 0.0), 1.0)
    return tau_end + 0.5 * (tau_start - tau_end) * (1.0 + math.cos(math.pi * p))
