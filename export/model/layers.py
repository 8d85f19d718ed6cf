"""Small transformer blocks written out in plain ops.

Attention is MatMul + Softmax with an additive mask so the exported ONNX (opset 18) contains no
fused Attention op that TensorRT 10.3 cannot read, and the FP16 pass can keep Softmax in FP32.
Only the ONNX export traces the plain ops. Everywhere else, attention whose weights see no dropout
(evaluation, and training without attention dropout) runs as torch's fused
``scaled_dot_product_attention``: the plain ops keep every (N x N) score matrix for the backward
pass, which for lvm-edge's sampler (5,880 tokens, 8 heads, batch 4) is 4.4 GB a layer and ran a 24 GB
machine out of memory, while the fused CPU kernel keeps O(N); and without gradients it is ~8x faster
on 2 cores (lvm-tiny's sampler, 1,176 tokens: 7 against 53 ms a layer), which is most of the reader
stage's time per training video. It differs from the plain ops by float rounding (~2e-7), far inside
the parity bounds (export/onnx/parity.py). It has no dropout of its own (torch would fall back to the
plain computation, slower), so attention with dropout in training keeps the plain ops.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

MASK_NEG = -1.0e4  # finite, so the same mask survives an FP16 graph


class AttentionDropout(nn.Dropout):
    """``nn.Dropout`` on attention weights, its mask drawn by numpy. Torch's CPU dropout draws its
    Bernoulli mask on one thread: 55-61 ms for one batch of the heads' attention weights (8 x 4 x 392
    x 392 on 2 cores) where numpy's PCG64 draws the same mask as 16-bit integers in 9 ms; attention
    dropout was a quarter of the reader and stage-1 steps. Each element is kept with probability
    1 - p (p rounded to 1/65536) and scaled by 1 / (1 - p), as ``nn.Dropout`` does; the numpy seed
    is drawn from torch's generator, so ``torch.manual_seed`` still fixes a run. Other devices keep
    torch's dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.p >= 1.0:
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)))
        draw = np.random.default_rng(seed).integers(0, 65536, size=tuple(x.shape), dtype=np.uint16)
        keep = torch.from_numpy(draw.view(np.int16)) >= round(self.p * 65536) - 32768
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = AttentionDropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (B, Nq, D) attends to ctx (B, Nk, D); bias (B, 1, 1, Nk) additive or None."""
        b, nq, d = x.shape
        nk = ctx.shape[1]
        q = self.q(x).reshape(b, nq, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(ctx).reshape(b, nk, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if (not self.training or self.drop.p == 0.0) and not torch.onnx.is_in_onnx_export():
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            return self.out(y.transpose(1, 2).reshape(b, nq, d))
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        if bias is not None:
            att = att + bias
        att = self.drop(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, nq, d)
        return self.out(y)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float, attn_dropout: float | None = None) -> None:
        """``attn_dropout``: dropout on the attention weights (None: ``dropout``)."""
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout if attn_dropout is None else attn_dropout)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.drop(self.attn(h, h, bias))
        return x + self.drop(self.ff(self.n2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float, attn_dropout: float | None = None) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        p = dropout if attn_dropout is None else attn_dropout
        self.self_attn = Attention(dim, heads, p)
        self.cross_attn = Attention(dim, heads, p)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, ctx, self_bias=None, ctx_bias=None):
        h = self.n1(x)
        x = x + self.drop(self.self_attn(h, h, self_bias))
        x = x + self.drop(self.cross_attn(self.n2(x), ctx, ctx_bias))
        return x + self.drop(self.ff(self.n3(x)))


def key_bias(keep: torch.Tensor) -> torch.Tensor:
    """(B, N) 1/0 keep mask -> (B, 1, 1, N) additive attention bias."""
    return ((1.0 - keep.to(torch.float32)) * MASK_NEG)[:, None, None, :]
