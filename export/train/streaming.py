"""A video's tokens streamed through the model clip by clip, as the device streams frames.

One clip step for training, the heads stage and evaluation: clip ``c`` is frames
[c*T, (c+1)*T) of an encoded video; its tokens, their frame times and patch indices are the
sampler's input, and its per-frame mean tokens are folded into the online SVD. The device runtime
does the same step in numpy (``edge_runtime.engine``), with the same clips (``whole_clips``) and the
same fold (``fold_clip``). A trailing partial clip is never streamed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from edge_runtime.memory.clip_step import fold_clip, whole_clips
from export.dataset.video_data import VideoData
from export.model.lvmnet import LVMNet
from export.model.svd_torch import TorchOnlineSVD


@dataclass
class MemoryStack:
    """The frozen sampler's memories of one video, one row per kept clip: what a heads-stage or a
    reader step reads (tokens, their times and patches, which are real, the online SVD after each)."""
    tokens: torch.Tensor     # (S, m, d) float16
    times: torch.Tensor      # (S, m)
    patches: torch.Tensor    # (S, m) int64
    valid: torch.Tensor      # (S, m)
    basis: torch.Tensor      # (S, r, d)
    sv: torch.Tensor         # (S, r)


def new_svd(net: LVMNet) -> TorchOnlineSVD:
    """An empty online SVD with the model's settings."""
    return TorchOnlineSVD.from_config(net.cfg)


def clip_step(net: LVMNet, data: VideoData, c: int, svd: TorchOnlineSVD):
    """Clip ``c`` of ``data`` -> the sampler's (clip (1, T*P, d), clip_t (1, T*P), clip_p (1, T*P)),
    after folding its per-frame mean tokens into ``svd``."""
    T = net.cfg.stream.clip_frames
    frames = slice(c * T, (c + 1) * T)
    tok = data.tokens[frames].float()
    clip_t, clip_p = net.clip_coords(torch.from_numpy(data.times[frames]).float()[None])
    fold_clip(svd, tok)
    return tok.reshape(1, -1, tok.shape[-1]), clip_t, clip_p


@torch.no_grad()
def stream_clips(net: LVMNet, data: VideoData, sampler: str = "neural", seed: int = 0):
    """One pass over the video, yielding (clip index, memory tuple (1, m, ...), TorchOnlineSVD) after
    every clip (the SVD object is updated in place); returns the final (memory, SVD), also for a
    video of no clip. ``sampler``: "neural" (the trained sampler) or "random" (uniformly random
    memory tokens: i.i.d. random keys, keep the top m, which is a uniform random m-subset of
    everything seen, in one pass)."""
    m = net.cfg.stream.memory_tokens
    carry = net.empty_carry(1)
    mem = carry[:4]
    keys = torch.full((1, m), -1e9)
    gen = torch.Generator().manual_seed(seed)
    svd = new_svd(net)
    for c, _ in whole_clips(len(data.times), net.cfg.stream.clip_frames):
        clip, ct, cp = clip_step(net, data, c, svd)
        if sampler == "neural":
            carry = net.sampler(*carry, clip, ct, cp)
            mem = carry[:4]
        else:
            all_keys = torch.cat([keys, torch.rand(1, clip.shape[1], generator=gen)], dim=1)
            idx = torch.topk(all_keys, m, dim=-1).indices
            cat = (torch.cat([mem[0], clip], 1), torch.cat([mem[1], ct], 1), torch.cat([mem[2], cp], 1),
                   torch.cat([mem[3], torch.ones_like(ct)], 1))
            mem = tuple(torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1])) if x.ndim == 3
                        else torch.gather(x, 1, idx) for x in cat)
            keys = torch.gather(all_keys, 1, idx)
        yield c, mem, svd
    return mem, svd


@torch.no_grad()
def stream_memory(net: LVMNet, data: VideoData, sampler: str = "neural", seed: int = 0):
    """One pass over the video: -> (memory tuple (1, m, ...), TorchOnlineSVD)."""
    clips = stream_clips(net, data, sampler, seed)
    try:
        while True:
            next(clips)
    except StopIteration as done:
        return done.value
