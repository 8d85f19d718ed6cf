"""Exported ONNX graphs kept between runs, in $LVM_EDGE_CACHE/graphs (default ~/.cache/lvm-edge/graphs).

Torch's dynamo exporter takes 10-30 s a graph on 2 cores, and the same module traced again gives the
same graph: exporting one checkpoint at another precision, with or without the timeline, or its
backbone again for a training run's tokens. Two things are kept:

- the finished graph (traced, then optimised by onnxscript) under a key that hashes everything the
  file can depend on (``graph_key``):
  - the module: its class, its structure (``repr``), every parameter and buffer (names, dtypes,
    shapes, bytes), its train/eval mode, and the plain attributes of each submodule (configs, flags,
    tensors that are not parameters);
  - the example inputs (dtypes, shapes, bytes), the I/O names, the dynamic shapes and the opset;
  - the exporter: torch's, onnx's and onnxscript's versions and the source of every module under
    ``export/`` (the model code and this exporter).
- the traced graph before optimisation (``raw/``) under the same key without the weights' bytes
  (``structure_key``). In it every weight is an initializer named as in the module's ``state_dict``,
  so a module of the same structure with other weights (the same model after a fine-tune, another
  training run) takes its weights into that graph instead of being traced again. The result is
  optimised as a fresh trace is (one path for both), and it is kept only if it gives the module's
  own outputs on the example inputs; otherwise the module is traced.

Anything the keys cannot see (a value that has no stable ``repr``) makes them differ from run to run,
so such a graph is exported again, never served stale. ``LVM_EDGE_GRAPH_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edge_runtime.atomic_write import atomic_writer
from export.cache_dir import cache_root

EXPORT_SRC = Path(__file__).resolve().parent.parent  # export/
KEPT = 64  # graphs kept; the oldest used go first (a tiny model's graphs are 1-20 MB)
# a graph given other weights must reproduce the module's outputs on the example inputs this closely
# (fp32 graph vs eager PyTorch: the exporter's own parity is ~1e-5; a weight left stale is far off)
REUSE_RTOL, REUSE_ATOL = 1e-3, 1e-4


def enabled() -> bool:
    return os.environ.get("LVM_EDGE_GRAPH_CACHE", "1") != "0"


def cached_export(module: nn.Module, args: tuple, meta: Any, path: Path, trace: Callable[[Path], None]) -> Path:
    """Write ``module``'s finished graph to ``path``. ``trace(raw)`` is the real export: it writes the
    traced graph, not yet optimised, to ``raw``. ``meta``: the rest of what the export is given (names,
    dynamic shapes, opset), as something with a stable ``repr``."""
    if not enabled():
        _trace_and_finish(module, path, trace, None)
        return path
    graphs = cache_root() / "graphs"
    kept = graphs / f"{graph_key(module, args, meta)}.onnx"
    if kept.is_file():
        shutil.copyfile(kept, path)
        os.utime(kept)  # recently used: kept longest
        return path
    raw = graphs / "raw" / f"{structure_key(module, args, meta)}.onnx"
    if _reused(raw, module, args, path):
        os.utime(raw)
    else:
        _trace_and_finish(module, path, trace, raw)
    _keep(kept, lambda tmp: shutil.copyfile(path, tmp))
    return path


def _reused(raw: Path, module: nn.Module, args: tuple, path: Path) -> bool:
    """``raw`` filled with ``module``'s weights into ``path``, if it is kept and gives the module's outputs."""
    if not raw.is_file():
        return False
    try:
        return finish(raw, module, path) and agrees(path, module, args)
    except Exception:  # noqa: BLE001 - a damaged or foreign kept file costs a trace, never the export
        return False


def _trace_and_finish(module: nn.Module, path: Path, trace: Callable[[Path], None], raw: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "raw.onnx"
        trace(fresh)
        if not finish(fresh, module, path):
            raise RuntimeError(f"{path.name}: the traced graph's weights do not fit the module it was traced from")
        if raw is not None:
            _keep(raw, lambda t: shutil.copyfile(fresh, t))


def finish(raw: Path, module: nn.Module, path: Path) -> bool:
    """``raw``'s traced graph with ``module``'s weights, optimised as torch.onnx.export optimises, into
    ``path``. False (and nothing written) when a weight of the graph does not fit the module's."""
    import onnx_ir as ir

    model = ir.load(str(raw))
    weights = module.state_dict()
    for name, value in model.graph.initializers.items():
        t = weights.get(name)
        if t is None:  # a constant of the structure (hashed into the key), not a weight
            continue
        arr = t.detach().cpu().contiguous().numpy()
        old = value.const_value
        if old is None or tuple(old.shape) != arr.shape or old.dtype != ir.DataType.from_numpy(arr.dtype):
            return False
        value.const_value = ir.Tensor(arr, name=name)
    program = torch.onnx.ONNXProgram(model, None)
    program.optimize()
    program.save(str(path))
    return True


def agrees(path: Path, module: nn.Module, args: tuple) -> bool:
    """The graph at ``path`` gives ``module``'s outputs on ``args`` (ONNX Runtime on the CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.detach().cpu().numpy() for i, a in zip(sess.get_inputs(), args)
             if isinstance(a, torch.Tensor)}
    with torch.no_grad():
        want = module(*args)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    got = sess.run(None, feeds)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        w = w.detach().cpu().numpy()
        if g.shape != w.shape:
            return False
        if np.issubdtype(w.dtype, np.floating):
            if not np.allclose(g, w, rtol=REUSE_RTOL, atol=REUSE_ATOL, equal_nan=True):
                return False
        elif not np.array_equal(g, w):
            return False
    return True


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
    return _key(module, args, meta, weights=True)


def structure_key(module: nn.Module, args: tuple, meta: Any) -> str:
    """``graph_key`` without the bytes of the module's ``state_dict``: the graph a trace gives before
    its weights are filled in."""
    return _key(module, args, meta, weights=False)


def _key(module: nn.Module, args: tuple, meta: Any, *, weights: bool) -> str:
    h = hashlib.sha256()
    h.update(_exporter_digest().encode() + (b"|weights" if weights else b"|structure"))
    h.update(f"{type(module).__module__}.{type(module).__qualname__}|{module!r}|{module.training}|{meta!r}".encode())
    state = module.state_dict(keep_vars=False)
    for name, t in state.items():
        if weights:
            _tensor(h, name, t)
        else:
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
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
