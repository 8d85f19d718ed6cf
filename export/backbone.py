"""Frozen image backbone: uint8 RGB frames in, P patch tokens of width d out.

Input normalisation is folded into the graph so the device feeds raw camera pixels (NHWC uint8).
Weights come from a local safetensors file when given; nothing ever asks a model hub.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from edge_runtime.config import BackboneConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, weights: str | Path | None = None) -> None:
        super().__init__()
        import timm

        self.cfg = cfg
        if cfg.out_index is not None:
            self.net = timm.create_model(cfg.name, pretrained=False, features_only=True,
                                         out_indices=(cfg.out_index,), **cfg.kwargs)
        else:
            self.net = timm.create_model(cfg.name, pretrained=False, num_classes=0, **cfg.kwargs)
        self.prefix_tokens = int(getattr(self.net, "num_prefix_tokens", 0))
        self.register_buffer("pix_mean", torch.tensor(cfg.mean).mul(255.0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(cfg.std).mul(255.0).view(1, 3, 1, 1), persistent=False)
        weights = weights or cfg.weights
        if weights:
            self.load_weights(weights)
        self._check_geometry()

    def load_weights(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        state = load_file(str(path))
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: backbone weights do not match {self.cfg.name} "
                             f"(missing {len(missing)}, unexpected {len(unexpected)} keys)")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.out_index is not None:
            return self.net(x)[0]
        return self.net.forward_features(x)

    def _tokens(self, feats: torch.Tensor) -> torch.Tensor:
        d = self.cfg.dim
        if feats.ndim == 3:  # ViT-style (B, N, C)
            return feats[:, self.prefix_tokens:, :]
        if feats.ndim == 4 and feats.shape[1] == d:  # NCHW
            return feats.flatten(2).transpose(1, 2)
        if feats.ndim == 4 and feats.shape[-1] == d:  # NHWC (some Swin variants)
            return feats.flatten(1, 2)
        raise ValueError(f"{self.cfg.name}: feature map {tuple(feats.shape)} has no axis of width dim={d}")

    def _check_geometry(self) -> None:
        s = self.cfg.image_size
        with torch.no_grad():
            was = self.training
            self.eval()
            tok = self.forward(torch.zeros(1, s, s, 3, dtype=torch.uint8))
            self.train(was)
        want = (1, self.cfg.tokens_per_frame, self.cfg.dim)
        if tuple(tok.shape) != want:
            raise ValueError(f"backbone {self.cfg.name} at {s}px gives tokens {tuple(tok.shape)}, "
                             f"config says {want} (grid={self.cfg.grid}, dim={self.cfg.dim})")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, H, W, 3) uint8 RGB -> tokens (B, P, d) float32."""
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - self.pix_mean) / self.pix_std
        return self._tokens(self._features(x))

    def freeze(self) -> "Backbone":
        self.requires_grad_(False)
        return self.eval()
