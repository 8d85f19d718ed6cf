"""Frozen image backbone: uint8 RGB frames in, P patch tokens of width d out.

Input normalisation is folded into the graph so the device feeds raw camera pixels (NHWC uint8).
The weights come from one of three places, recorded in ``Backbone.init_source``: random init
(the default), a local safetensors file (``backbone.weights`` or the ``weights`` argument), or
timm's pretrained weights (``backbone.pretrained: true``), which is the only case that may ask the
model hub; with HF_HUB_OFFLINE=1 (the default here) timm finds them in its local cache or fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from edge_runtime.config import BackboneConfig, ConfigError
from edge_runtime.file_hash import sha256_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# the backbone's part of an lvm-edge checkpoint, and of the bare Backbone module's state dict
_PREFIXES = ("backbone.net.", "net.")


class BackboneWeightsError(ConfigError):
    """Backbone weights that cannot be had or do not fit; one line naming the file or model and the fix."""


class Backbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, weights: str | Path | None = None, *, init_weights: bool = True) -> None:
        """``weights`` (a safetensors file) wins over the config's ``weights`` / ``pretrained``.
        ``init_weights=False`` skips the config's two: for callers that load a whole state dict right
        after (a checkpoint), so neither the file nor the hub is needed then."""
        super().__init__()
        self.cfg = cfg
        weights = weights or (cfg.weights if init_weights else None)
        pretrained = init_weights and cfg.pretrained and not weights
        self.net = self._fetch_pretrained() if pretrained else self._create(pretrained=False)
        # what the weights were initialised from; callers that load other weights set it themselves
        self.init_source = f"timm-pretrained:{cfg.name}" if pretrained else "random"
        self.prefix_tokens = int(getattr(self.net, "num_prefix_tokens", 0))
        self.register_buffer("pix_mean", torch.tensor(cfg.mean).mul(255.0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(cfg.std).mul(255.0).view(1, 3, 1, 1), persistent=False)
        if weights:
            self.load_weights(weights)
        self._check_geometry()

    def _create(self, pretrained: bool) -> nn.Module:
        import timm

        cfg = self.cfg
        if cfg.out_index is not None:
            return timm.create_model(cfg.name, pretrained=pretrained, features_only=True,
                                     out_indices=(cfg.out_index,), **cfg.kwargs)
        return timm.create_model(cfg.name, pretrained=pretrained, num_classes=0, **cfg.kwargs)

    def _fetch_pretrained(self) -> nn.Module:
        name = self.cfg.name
        fix = ("download them on a machine that reaches the hub, save them as safetensors and set "
               "backbone.weights: PATH instead (see docs/backbone-choice.md)")
        if _offline() and _url_only_uncached(name):
            raise BackboneWeightsError(f"backbone.pretrained: timm's weights for {name} are a URL download, "
                                       f"not cached, and HF_HUB_OFFLINE is set; {fix}")
        try:
            return self._create(pretrained=True)
        except Exception as err:  # hub, network and timm errors come in many types
            reason = ("HF_HUB_OFFLINE is set and they are not in the local cache" if _offline()
                      else _first_line(err))
            raise BackboneWeightsError(f"backbone.pretrained: cannot fetch timm's pretrained weights for {name} "
                                       f"({reason}); {fix}") from None

    def load_weights(self, path: str | Path) -> None:
        """Load a safetensors file: a bare timm state dict (the full classifier model's is fine: the
        parts this backbone leaves out are skipped), or one whose keys start with ``net.`` or
        ``backbone.net.`` (an lvm-edge checkpoint: its sampler and heads are ignored). A relative
        path is taken from the current directory. Anything wrong -> BackboneWeightsError, one line."""
        path = Path(path)
        state = _read_safetensors(path)
        state = _backbone_part(state)
        own = self.net.state_dict()
        spare = self._full_model_keys() - own.keys()
        # BatchNorm's step counters carry no weights; files converted from elsewhere often lack them
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own and k not in spare]
        wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:
            parts = [f"{what} {len(keys)} ({', '.join(_telling(keys)[:2])})"
                     for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
            raise BackboneWeightsError(f"{path}: tensors do not fit backbone {self.cfg.name}: {'; '.join(parts)}")
        self.net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        self.init_source = f"file:{path} sha256:{sha256_file(path)[:12]}"

    def _full_model_keys(self) -> set[str]:
        """Keys of timm's whole classifier model: what a converted pretrained file holds."""
        try:
            with torch.device("meta"):  # shapes only: no memory, no init cost
                import timm

                return set(timm.create_model(self.cfg.name, pretrained=False, **self.cfg.kwargs).state_dict())
        except Exception:  # a model that cannot be built on the meta device: accept no spare keys
            return set()

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


def _offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return bool(constants.is_offline_mode())


def _url_only_uncached(name: str) -> bool:
    """True when timm would download ``name``'s weights from a plain URL, which ignores
    HF_HUB_OFFLINE and can wait minutes on a network that drops packets."""
    from timm.models import get_pretrained_cfg

    pc = get_pretrained_cfg(name)
    if pc is None or pc.hf_hub_id or pc.file or not pc.url:
        return False
    try:
        from timm.models._hub import check_cached_file
    except ImportError:
        return True
    return not check_cached_file(pc.url)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:160] if text else type(err).__name__)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to the current directory {Path.cwd()})"
        raise BackboneWeightsError(f"{path}: backbone weights file not found{where}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80" or head == b"PK\x03\x04":
        raise BackboneWeightsError(f"{path}: a pickle / torch.save file; only safetensors is loaded (convert it with "
                                   "safetensors.torch.save_file on a machine you trust)")
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise BackboneWeightsError(f"{path}: not a readable safetensors file ({_first_line(err)[:120]})") from None


def _backbone_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        # a checkpoint also holds sampler.* and heads.*; a bare Backbone dump holds only net.*
        if part and (prefix == "backbone.net." or len(part) == len(state)):
            return part
    return state


def _telling(keys: list[str]) -> list[str]:
    """Names that say most first: BatchNorm step counters last."""
    return sorted(keys, key=lambda k: k.endswith("num_batches_tracked"))


