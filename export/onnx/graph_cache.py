"""Exported ONNX graphs kept between runs, in $LVM_EDGE_CACHE/graphs (default ~/.cache/lvm-edge/graphs).

The same module exported again gives the same graph: one checkpoint at another precision, with or
without the timeline, or its backbone again for a training run's tokens. The traced graph is kept
under a key that hashes everything the file can depend on (``graph_key``):

- the module: its class, its structure (``repr``), every parameter and buffer (names, dtypes, shapes,
  bytes), its train/eval mode, and the plain attributes of each submodule (configs, flags, tensors
  that are not parameters);
- the example inputs (dtypes, shapes, bytes), the I/O names, the dynamic shapes and the opset;
- the exporter: torch's, onnx's and onnxscript's versions and the source of every module under
  ``export/`` (the model code and this exporter).

Anything the key cannot see (a value that has no stable ``repr``) makes it differ from run to run, so
such a graph is exported again, never served stale. ``LVM_EDGE_GRAPH_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edge_runtime.atomic_write import atomic_writer
from export.cache_dir import cache_root

EXPORT_SRC = Path(__file__).resolve().parent.parent  # export/
KEPT = 64  # graphs kept; the oldest used go first (a tiny model's graphs are 1-20 MB)


def enabled() -> bool:
    return os.environ.get("LVM_EDGE_GRAPH_CACHE", "1") != "0"


def cached_export(module: nn.Module, args: tuple, meta: Any, path: Path, trace: Callable[[Path], None]) -> Path:
    """Write ``module``'s traced graph to ``path``. ``trace(path)`` is the real export. ``meta``: the
    rest of what the export is given (names, dynamic shapes, opset), as something with a stable ``repr``."""
    if not enabled():
        trace(path)
        return path
    kept = cache_root() / "graphs" / f"{graph_key(module, args, meta)}.onnx"
    if kept.is_file():
        shutil.copyfile(kept, path)
        os.utime(kept)  # recently used: kept longest
        return path
    trace(path)
    _keep(kept, lambda tmp: shutil.copyfile(path, tmp))
    return path


def _keep(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` into ``target`` atomically; a read-only or full cache costs the next run an export,
    never this one."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(target) as tmp:
            write(Path(tmp))
        _trim(target.parent)
    except OSError:
        pass


def graph_key(module: nn.Module, args: tuple, meta: Any) -> str:
    h = hashlib.sha256()
    h.update(_exporter_digest().encode())
    h.update(f"{type(module).__module__}.{type(module).__qualname__}|{module!r}|{module.training}|{meta!r}".encode())
    state = module.state_dict(keep_vars=False)
    for name, t in state.items():
        _tensor(h, name, t)
    for name, b in module.named_buffers():  # non-persistent buffers are traced in as constants
        if name not in state:
            _tensor(h, name, b)
    for sub_name, sub in module.named_modules():
        for k, v in sorted(vars(sub).items()):
            if k.startswith("_") or isinstance(v, nn.Module) or k == "training":
                continue
            if isinstance(v, torch.Tensor):  # a plain tensor attribute: baked into the graph as a constant
                _tensor(h, f"{sub_name}.{k}", v)
            else:
                h.update(f"{sub_name}.{k}={_stable_repr(v)}".encode())
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            _tensor(h, f"arg{i}", a)
        else:
            h.update(f"arg{i}={a!r}".encode())
    return h.hexdigest()[:32]


def _stable_repr(v: Any, depth: int = 2) -> str:
    """``repr``, except for objects that print their address (timm's FeatureInfo, say): their type
    and their own attributes, so that the same module gives the same key in another process."""
    if type(v).__repr__ is not object.__repr__ or depth == 0 or not hasattr(v, "__dict__"):
        return repr(v)
    inner = ", ".join(f"{k}={_stable_repr(x, depth - 1)}" for k, x in sorted(vars(v).items()))
    return f"{type(v).__module__}.{type(v).__qualname__}({inner})"


def _tensor(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


@lru_cache(maxsize=1)
def _exporter_digest() -> str:
    import onnx
    import onnxscript

    h = hashlib.sha256(f"{torch.__version__}|{onnx.__version__}|{onnxscript.__version__}".encode())
    for p in sorted(EXPORT_SRC.rglob("*.py")):
        h.update(str(p.relative_to(EXPORT_SRC)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _trim(folder: Path) -> None:
    graphs = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime)
    for old in graphs[:-KEPT]:
        old.unlink(missing_ok=True)
