"""LVM-Net assembled from its three graphs: backbone, neural sampler, query heads."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edge_runtime.config import ModelConfig
from export.model.backbone import Backbone
from export.model.heads import QueryHeads
from export.model.s5_sampler import S5Sampler
from export.model.sampler import NeuralSampler


class LVMNet(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone_weights: str | Path | None = None, *,
                 backbone_init: bool = True) -> None:
        """``backbone_init=False``: skip the config's backbone weights (a file or timm's pretrained
        ones) because the caller loads a whole state dict next, e.g. from a checkpoint."""
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, backbone_weights, init_weights=backbone_init).freeze()
        self.sampler = S5Sampler(cfg) if cfg.sampler.kind == "s5" else NeuralSampler(cfg)
        self.heads = QueryHeads(cfg)

    def train(self, mode: bool = True) -> "LVMNet":
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics never move
        return self

    def empty_memory(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        m, d = self.cfg.stream.memory_tokens, self.cfg.backbone.dim
        return (torch.zeros(batch, m, d), torch.zeros(batch, m), torch.zeros(batch, m, dtype=torch.int64),
                torch.zeros(batch, m))

    def empty_carry(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """What a stream carries from clip to clip: the empty memory, then the sampler's own state if it
        has one (S5: the S4 layers' recurrent state). ``net.sampler(*carry, clip, clip_t, clip_p)``
        returns the next carry; its first four tensors are the memory the heads read."""
        mem = self.empty_memory(batch)
        return mem + (self.sampler.empty_state(batch),) if self.sampler.has_state else mem

    def clip_coords(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame timestamps (B, T) -> per-token times and patch indices (B, T*P)."""
        P = self.cfg.backbone.tokens_per_frame
        t = times[:, :, None].expand(-1, -1, P).reshape(times.shape[0], -1)
        p = torch.arange(P).repeat(times.shape[1])[None].expand(times.shape[0], -1)
        return t, p


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
