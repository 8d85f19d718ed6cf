"""Selective S4 (S5) sampler: S4D features of the stream pick which tokens the m-token memory keeps.

A second token selector beside LVM-Net's transformer sampler (``export/model/sampler.py``), after
Selective S4 (S5): a stack of diagonal state-space layers (S4D-Lin: A_n = -1/2 + i·pi·n, zero-order
hold) runs along time at every patch position, and a linear mask generator over its features ("Linear_S4",
the paper's best mask generator) scores every token. Training selects through the same relaxed Gumbel top-m with a
straight-through estimator as the LVM sampler; inference is the same chunked TopK + Gather, so the
memory it writes is the one the heads already read.

Streaming: each patch position's recurrent state is carried from clip to clip — the ``sampler_state``
input / ``new_sampler_state`` output of the sampler graph, (n_streams, P, layers, H, 2N) float32, constant in
size for the life of the stream. Memory tokens are re-scored every clip by replaying each one as a
single step against its patch's state after the clip (no parameters of their own): a token
competes for a slot with what its patch position has seen since.

Complex numbers are kept as (real, imaginary) pairs of real tensors: ONNX has no complex type.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edge_runtime.config import ModelConfig
from export.model.encodings import spatial_encoding
from export.model.layers import MASK_NEG
from export.model.sampler import chunked_topk, cosine_tau, gather_tokens, relaxed_topk


def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


class S4D(nn.Module):
    """One diagonal S4 layer, H channels of N complex modes each (S4D-Lin init, ZOH, B = 1).

    ``mode="conv"``: a chunk's outputs are one causal convolution with the kernel
    K_l = 2·Re(C·B̄·Ā^l) plus the carried state's contribution 2·Re(C·Ā^(t+1)·x0) — matrix products only;
    ``mode="recurrent"``: x_t = Ā·x_(t-1) + B̄·u_t step by step. Both give the same numbers."""

    def __init__(self, channels: int, modes: int, mode: str = "conv", dt_min: float = 0.005, dt_max: float = 0.5) -> None:
        super().__init__()
        self.h, self.n, self.mode = channels, modes, mode
        # time steps spread log-uniformly: half-lives from ~3 frames to ~280 frames at 1 fps
        g = torch.Generator().manual_seed(channels * 131 + modes)
        self.log_dt = nn.Parameter(torch.rand(channels, generator=g) * (math.log(dt_max) - math.log(dt_min))
                                   + math.log(dt_min))
        self.log_neg_a_re = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.a_im = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1))
        self.c = nn.Parameter(torch.randn(channels, modes, 2, generator=g) * (0.5 ** 0.5))
        self.d = nn.Parameter(torch.ones(channels))

    def discrete(self):
        """-> (dA_re, dA_im, dB_re, dB_im, dtA_re, dtA_im), each (H, N)."""
        dt = torch.exp(self.log_dt)[:, None]
        a_re, a_im = -torch.exp(self.log_neg_a_re), self.a_im
        dta_re, dta_im = dt * a_re, dt * a_im
        mag = torch.exp(dta_re)
        da_re, da_im = mag * torch.cos(dta_im), mag * torch.sin(dta_im)
        # B̄ = (Ā - 1) / A
        den = a_re * a_re + a_im * a_im
        nr, ni = da_re - 1.0, da_im
        db_re, db_im = (nr * a_re + ni * a_im) / den, (ni * a_re - nr * a_im) / den
        return da_re, da_im, db_re, db_im, dta_re, dta_im

    def forward(self, u: torch.Tensor, x0: torch.Tensor):
        """u (S, T, H) S sequences of T steps; x0 (S, H, 2N) carried state (real | imaginary).
        -> y (S, T, H), x_T (S, H, 2N)."""
        if self.mode == "recurrent":
            return self._recurrent(u, x0)
        return self._conv(u, x0)

    def _recurrent(self, u, x0):
        da_re, da_im, db_re, db_im, _, _ = self.discrete()
        c_re, c_im = self.c[..., 0], self.c[..., 1]
        xr, xi = x0[..., : self.n], x0[..., self.n :]
        ys = []
        for t in range(u.shape[1]):
            ut = u[:, t, :, None]
            xr, xi = _cmul(da_re, da_im, xr, xi)
            xr, xi = xr + db_re * ut, xi + db_im * ut
            ys.append(2.0 * (c_re * xr - c_im * xi).sum(-1) + self.d * u[:, t])
        return torch.stack(ys, dim=1), torch.cat([xr, xi], dim=-1)

    def _conv(self, u, x0):
        T = u.shape[1]
        da_re, da_im, db_re, db_im, dta_re, dta_im = self.discrete()
        c_re, c_im = self.c[..., 0], self.c[..., 1]
        steps = torch.arange(T + 1, dtype=u.dtype, device=u.device)[:, None, None]   # (T+1, 1, 1)
        mag = torch.exp(steps * dta_re)                                              # Ā^l, l = 0..T
        pw_re, pw_im = mag * torch.cos(steps * dta_im), mag * torch.sin(steps * dta_im)  # (T+1, H, N)
        cb_re, cb_im = _cmul(c_re, c_im, db_re, db_im)
        k = 2.0 * (cb_re * pw_re[:T] - cb_im * pw_im[:T]).sum(-1)                    # (T, H): K_l
        # causal Toeplitz: y_t = sum_{j<=t} K_(t-j) u_j
        lag = torch.arange(T, device=u.device)[:, None] - torch.arange(T, device=u.device)[None, :]
        toe = k[lag.clamp_min(0)] * (lag >= 0)[..., None].to(u.dtype)                # (T, T, H)
        y = torch.einsum("tjh,sjh->sth", toe, u) + self.d * u
        xr, xi = x0[..., : self.n], x0[..., self.n :]
        # the carried state seen at step t: 2·Re(C·Ā^(t+1)·x0)
        cp_re, cp_im = _cmul(c_re, c_im, pw_re[1:], pw_im[1:])                       # (T, H, N)
        y = y + 2.0 * (torch.einsum("thn,shn->sth", cp_re, xr) - torch.einsum("thn,shn->sth", cp_im, xi))
        # x_T = Ā^T·x0 + sum_j Ā^(T-1-j)·B̄·u_j
        nr, ni = _cmul(pw_re[T], pw_im[T], xr, xi)
        w_re, w_im = _cmul(pw_re[:T].flip(0), pw_im[:T].flip(0), db_re, db_im)      # (T, H, N)
        nr = nr + torch.einsum("thn,sth->shn", w_re, u)
        ni = ni + torch.einsum("thn,sth->shn", w_im, u)
        return y, torch.cat([nr, ni], dim=-1)

    def replay(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step of input u (S, H) against state x (S, H, 2N): the output only (the state is not kept)."""
        da_re, da_im, db_re, db_im, _, _ = self.discrete()
        xr, xi = _cmul(da_re, da_im, x[..., : self.n], x[..., self.n :])
        xr, xi = xr + db_re * u[..., None], xi + db_im * u[..., None]
        return 2.0 * (self.c[..., 0] * xr - self.c[..., 1] * xi).sum(-1) + self.d * u


class S4Block(nn.Module):
    """Pre-norm residual block: LayerNorm -> S4D -> GELU -> Linear."""

    def __init__(self, d: int, modes: int, mode: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.s4 = S4D(d, modes, mode)
        self.out = nn.Linear(d, d)

    def forward(self, x, state):
        y, new = self.s4(self.norm(x), state)
        return x + self.out(torch.nn.functional.gelu(y)), new

    def replay(self, x, state):
        return x + self.out(torch.nn.functional.gelu(self.s4.replay(self.norm(x), state)))


class S4Encoder(nn.Module):
    """Tokens -> S4 features along time at every patch position, with the carried state."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sc = cfg.sampler
        self.P, self.grid, self.d = cfg.backbone.tokens_per_frame, cfg.backbone.grid, sc.d_model
        self.inp = nn.Sequential(nn.LayerNorm(cfg.backbone.dim), nn.Linear(cfg.backbone.dim, sc.d_model))
        self.blocks = nn.ModuleList(S4Block(sc.d_model, sc.state_size, sc.s4_mode) for _ in range(sc.layers))
        self.state_shape = (self.P, sc.layers, sc.d_model, 2 * sc.state_size)  # per stream

    def empty_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, *self.state_shape)

    def embed(self, tokens, patches):
        return self.inp(tokens) + spatial_encoding(patches, self.d, self.grid)

    def forward(self, clip: torch.Tensor, state: torch.Tensor):
        """clip (B, T*P, dim) frame-major; state (B, P, L, H, 2N) -> features (B, T*P, H), new state."""
        B, k, _ = clip.shape
        P = self.P
        T = k // P
        patches = torch.arange(P, device=clip.device).repeat(T)[None].expand(B, -1)
        x = self.embed(clip, patches)
        # (B, T, P, H) -> one sequence per (stream, patch): (B*P, T, H)
        x = x.reshape(B, T, P, self.d).transpose(1, 2).reshape(B * P, T, self.d)
        news = []
        for i, blk in enumerate(self.blocks):
            x, s = blk(x, state[:, :, i].reshape(B * P, self.d, -1))
            news.append(s.reshape(B, P, self.d, -1))
        feats = x.reshape(B, P, T, self.d).transpose(1, 2).reshape(B, k, self.d)
        return feats, torch.stack(news, dim=2)

    def replay(self, tokens, patches, state):
        """Memory tokens (B, m, dim) at patches (B, m), each one step against its patch's state
        (B, P, L, H, 2N) -> features (B, m, H)."""
        B, m = patches.shape
        x = self.embed(tokens, patches)
        idx = patches.reshape(B, m, 1, 1, 1).expand(-1, -1, *state.shape[2:])
        st = torch.gather(state, 1, idx)                                     # (B, m, L, H, 2N)
        for i, blk in enumerate(self.blocks):
            x = blk.replay(x, st[:, :, i])
        return x


class S5Sampler(nn.Module):
    """Selective S4 token selector with LVM-Net's sampler contract plus a carried ``sampler_state``."""

    has_state = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sc = cfg.sampler
        self.m, self.chunk = cfg.stream.memory_tokens, sc.topk_chunk
        self.encoder = S4Encoder(cfg)
        self.state_shape = self.encoder.state_shape
        self.source = nn.Embedding(2, sc.d_model)  # 0 = already in memory, 1 = new clip token
        self.mg = nn.Sequential(nn.LayerNorm(sc.d_model), nn.Linear(sc.d_model, 1))  # Linear_S4 mask generator
        self.tau = sc.tau_start

    def empty_state(self, batch: int = 1) -> torch.Tensor:
        return self.encoder.empty_state(batch)

    def scores(self, mem, mem_p, mem_valid, clip, state):
        """-> scores (B, m + k) memory first, and the new state."""
        feats, new_state = self.encoder(clip, state)
        mem_feats = self.encoder.replay(mem, mem_p, new_state)
        src = self.source.weight
        s_clip = self.mg(feats + src[1]).squeeze(-1)
        s_mem = self.mg(mem_feats + src[0]).squeeze(-1) + (1.0 - mem_valid) * MASK_NEG
        return torch.cat([s_mem, s_clip], dim=1), new_state

    @staticmethod
    def _concat(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p):
        return (torch.cat([mem, clip], 1), torch.cat([mem_t, clip_t], 1), torch.cat([mem_p, clip_p], 1),
                torch.cat([mem_valid, torch.ones_like(clip_t)], 1))

    # The carried state follows the memory tensors, so the code that streams either sampler holds one
    # tuple, "what the stream carries", and calls sampler(*carried, clip, clip_t, clip_p).
    def forward(self, mem, mem_t, mem_p, mem_valid, sampler_state, clip, clip_t, clip_p):
        """Inference: deterministic top-m. -> (mem, mem_t, mem_p, mem_valid, sampler_state)."""
        s, new_state = self.scores(mem, mem_p, mem_valid, clip, sampler_state)
        tokens, times, patches, valid = self._concat(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p)
        idx = chunked_topk(s, self.m, self.chunk)
        return (gather_tokens(tokens, idx), gather_tokens(times, idx), gather_tokens(patches, idx),
                gather_tokens(valid, idx), new_state)

    def forward_train(self, mem, mem_t, mem_p, mem_valid, sampler_state, clip, clip_t, clip_p,
                      generator: torch.Generator | None = None):
        """Training: relaxed Gumbel top-m (straight-through). -> ((new memory..., new state), scores)."""
        s, new_state = self.scores(mem, mem_p, mem_valid, clip, sampler_state)
        tokens, times, patches, valid = self._concat(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p)
        select, idx = relaxed_topk(s, self.m, self.tau, noise=True, generator=generator)
        kept = gather_tokens(tokens, idx) * gather_tokens(select, idx)[..., None]
        return (kept, gather_tokens(times, idx), gather_tokens(patches, idx), gather_tokens(valid, idx),
                new_state), s

    def set_temperature(self, progress: float, tau_start: float, tau_end: float) -> float:
        self.tau = cosine_tau(progress, tau_start, tau_end)
        return self.tau
