"""Sinusoidal encodings (Vaswani et al.) for a token's timestamp and its patch position."""
from __future__ import annotations

import math

import torch


def sinusoid(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """pos (...) float -> (..., dim): [sin(pos·w_i), cos(pos·w_i)] with w_i = base^(-2i/dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=pos.device) * (-math.log(base) / half))
    ang = pos.to(torch.float32)[..., None] * freqs
    enc = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        enc = torch.nn.functional.pad(enc, (0, 1))
    return enc


def temporal_encoding(t_seconds: torch.Tensor, dim: int, fps: float, max_video_s: float) -> torch.Tensor:
    """Video-level encoding of frame index t·fps; the period scale covers the longest video."""
    return sinusoid(t_seconds * fps, dim, base=max(10000.0, max_video_s * fps))


def spatial_encoding(patch_index: torch.Tensor, dim: int, grid: int) -> torch.Tensor:
    """2-D encoding: half the width for the patch row, half for the column."""
    p = patch_index.to(torch.int64)
    row = torch.div(p, grid, rounding_mode="floor")
    col = p - row * grid
    return torch.cat([sinusoid(row, dim // 2, 100.0), sinusoid(col, dim - dim // 2, 100.0)], dim=-1)
