"""Checkpoints are safetensors files: the LVMNet state_dict plus JSON metadata. Never pickle.

Metadata: ``format`` = lvm-checkpoint/1, ``config`` (the model config JSON), ``config_sha256``, and
whatever the trainer adds (``step``, ``epoch``, optimizer state lives in a separate file).
"""
from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.atomic_write import atomic_writer
from edge_runtime.config import ConfigError, ModelConfig, model_config_from_dict

FORMAT = "lvm-checkpoint/1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT = REPO_ROOT / "checkpoints" / "lvm-tiny.safetensors"
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and the reason."""


def save_checkpoint(net, path: str | Path, extra_meta: dict | None = None, labels: dict | None = None) -> Path:
    """Atomic write (edge_runtime.atomic_write): a crash keeps the old checkpoint or the new one.

    ``labels`` ({"activities": [...], "products": [...]}) name the model's classes; lvm-export copies
    them into the bundle, so a model trained on a user's dataset answers in that dataset's words."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = _checkpoint_meta(net, path, extra_meta, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_writer(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def holds_checkpoint(path: str | Path, net, extra_meta: dict | None = None, labels: dict | None = None,
                     ignore: tuple[str, ...] = ("command",)) -> bool:
    """Whether ``path`` already is what ``save_checkpoint(net, path, extra_meta, labels)`` would write (every
    tensor equal, the metadata equal but for ``ignore``): lvm-train --resume then leaves the file as it
    is, so the stages trained on it (whose files name its sha256) stay valid."""
    import torch
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return False
    want = {k: v for k, v in _checkpoint_meta(net, path, extra_meta, labels).items() if k not in ignore}
    try:
        with safe_open(str(path), "pt") as fh:
            if {k: v for k, v in (fh.metadata() or {}).items() if k not in ignore} != want:
                return False  # compared first: the metadata is read without the tensors
            state = net.state_dict()
            return set(fh.keys()) == set(state) and all(torch.equal(fh.get_tensor(k), v.detach())
                                                         for k, v in state.items())
    except Exception:  # noqa: BLE001 - a damaged file is not this checkpoint: it is written again
        return False


def _checkpoint_meta(net, path: Path, extra_meta: dict | None, labels: dict | None) -> dict[str, str]:
    meta = {"format": FORMAT, "config": json.dumps(net.cfg.to_dict(), sort_keys=True),
            "config_sha256": net.cfg.digest(),
            # where the frozen backbone's weights came from (random, timm, a local file; + pre-training)
            "backbone_init": str(getattr(net.backbone, "init_source", "unknown"))}
    if labels is not None:
        acts = labels.get("activities")
        if not isinstance(acts, list) or len(acts) != net.cfg.heads.num_activities:
            raise CheckpointError(f"{path}: {len(acts) if isinstance(acts, list) else 0} activity names for a model "
                                  f"with {net.cfg.heads.num_activities} classes")
        meta["labels"] = json.dumps({"activities": [str(a) for a in acts],
                                     "products": [str(p) for p in labels.get("products") or []]})
    meta.update({k: str(v) for k, v in (extra_meta or {}).items()})
    return meta


def read_format_file(path, fmt: str, what: str) -> tuple[dict[str, str], dict]:
    """(metadata, tensors) of a safetensors file whose metadata ``format`` is ``fmt``; ValueError (one line)
    for a missing or damaged file, or one that is not ``what`` (a reader file, an event head file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as fh:
            md = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open is no dict
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:100]})") from None
    if md.get("format") != fmt:
        raise ValueError(f"{path}: not {what} (format {md.get('format')!r}, expected {fmt})")
    return md, state


def refuse_pickle(path: str | Path) -> None:
    """CheckpointError unless ``path`` is a file that is not a pickle / torch.save archive."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors") if not p.name.endswith("-reader.safetensors"))
        raise CheckpointError(f"{path}: a folder, not a checkpoint file" + (f" (it holds {', '.join(inside[:3])})" if inside else ""))
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(f"{path}: looks like a pickle / torch.save file; only safetensors checkpoints are loaded")


def read_metadata(path: str | Path) -> dict[str, str]:
    """Header metadata, after checking the file is a readable, non-pickle safetensors file."""
    path = Path(path)
    refuse_pickle(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an lvm-edge checkpoint (metadata format={meta.get('format')!r})")
    return meta


def checkpoint_labels(meta: dict[str, str]) -> dict[str, list[str]] | None:
    """The class names a checkpoint was trained with; None for checkpoints that carry none (made from
    the generator before labels were stored: they use the generator's names)."""
    raw = meta.get("labels")
    if raw is None:
        return None
    try:
        labels = json.loads(raw)
        acts = [str(a) for a in labels["activities"]]
        prods = [str(p) for p in labels.get("products") or []]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError("checkpoint metadata 'labels' is not a JSON object with an 'activities' list") from None
    return {"activities": acts, "products": prods}


def checkpoint_config(path: str | Path) -> ModelConfig:
    meta = read_metadata(path)
    try:
        return model_config_from_dict(json.loads(meta["config"]), f"{path} (embedded config)")
    except (KeyError, json.JSONDecodeError, ConfigError) as err:
        raise CheckpointError(f"{path}: embedded config unusable ({err})") from None


def _load_tensors(path: str | Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: truncated or damaged ({str(err).splitlines()[0][:120]})") from None


def load_checkpoint(path: str | Path, cfg: ModelConfig | None = None):
    """-> (LVMNet, metadata). With ``cfg`` given, the checkpoint must have been trained for it."""
    from export.model.lvmnet import LVMNet

    path = Path(path)
    meta = read_metadata(path)
    ck_cfg = checkpoint_config(path)
    if cfg is not None and cfg.arch_digest() != ck_cfg.arch_digest():
        raise CheckpointError(f"{path}: trained for model '{ck_cfg.name}' ({ck_cfg.arch_digest()[:12]}), "
                              f"not for config '{cfg.name}' ({cfg.arch_digest()[:12]})")
    state = _load_tensors(path)
    net = LVMNet(ck_cfg, backbone_init=False)  # every tensor comes from the file: no hub, no weights file needed
    if "backbone_init" in meta:
        net.backbone.init_source = meta["backbone_init"]
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join((list(missing) + list(unexpected))[:3])
        raise CheckpointError(f"{path}: does not match the model (missing {len(missing)}, unexpected {len(unexpected)} "
                              f"tensors: {names}); made by another version of lvm-edge? retrain or use that version")
    net.eval()
    return net, meta


def load_backbone_state(path: str | Path, cfg: ModelConfig) -> dict:
    """The frozen backbone's tensors of a checkpoint trained with ``cfg``'s backbone (the sampler and
    heads may be of another version)."""
    ck_cfg = checkpoint_config(path)
    if ck_cfg.backbone != cfg.backbone:
        raise CheckpointError(f"{path}: its backbone ({ck_cfg.backbone.name}) differs from config '{cfg.name}'s")
    state = _load_tensors(path)
    prefix = "backbone."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f"{path}: holds no backbone tensors")
    return out


def load_stage1_state(path: str | Path, cfg: ModelConfig) -> dict:
    """The backbone's and the sampler's tensors of a checkpoint (keys as in LVMNet's state dict) for
    a heads stage on top of them; the checkpoint's heads may be of another version."""
    ck_cfg = checkpoint_config(path)
    for part in ("backbone", "stream", "sampler"):
        if getattr(ck_cfg, part) != getattr(cfg, part):
            raise CheckpointError(f"{path}: its {part} settings differ from config '{cfg.name}'s")
    state = _load_tensors(path)
    out = {k: v for k, v in state.items() if k.startswith(("backbone.", "sampler."))}
    from export.model.lvmnet import LVMNet

    expected = {k for k in LVMNet(cfg, backbone_init=False).state_dict() if k.startswith(("backbone.", "sampler."))}
    if set(out) != expected:
        missing = sorted(expected - set(out))[:3]
        raise CheckpointError(f"{path}: its backbone/sampler tensors do not match the model "
                              f"(missing: {', '.join(missing) or 'none'}); made by another version of lvm-edge?")
    return out


def load_reader_state(path: str | Path, cfg: ModelConfig) -> dict:
    """The backbone's and the heads' tensors of a checkpoint (keys as in LVMNet's state dict): the
    readers of a memory, for training another sampler against them (lvm-train --heads-from)."""
    ck_cfg = checkpoint_config(path)
    for part in ("backbone", "stream", "heads", "svd"):
        if getattr(ck_cfg, part) != getattr(cfg, part):
            raise CheckpointError(f"{path}: its {part} settings differ from config '{cfg.name}'s")
    state = _load_tensors(path)
    out = {k: v for k, v in state.items() if k.startswith(("backbone.", "heads."))}
    if not any(k.startswith("heads.") for k in out):
        raise CheckpointError(f"{path}: holds no heads tensors")
    return out
