"""The three ONNX graphs of a bundle, exported to the runtime's I/O contract.

The contract (names in order, accepted dtypes) is ``edge_runtime.backends.bundle.CONTRACT``: the runtime
binds by these names, so the graphs are built from the same table the runtime checks bundles with.
Graphs are traced with torch's TorchScript exporter (``dynamo=False``) at opset 18 — inside TensorRT 10.3's
range (<= 20) and below opset 23, whose fused Attention op TensorRT 10.3 cannot read. On 2 cores it
traces a graph in under a second, where the dynamo exporter took 10-30 s for the same graph and
ONNX Runtime's outputs are the same (the export's parity check measures them against PyTorch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.backends.bundle import CONTRACT, GRAPH_NAMES, OPTIONAL, contract_io
from export.model.lvmnet import LVMNet

OPSET = 18


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _spec(name: str) -> GraphSpec:
    inputs, outputs = CONTRACT[name]
    return GraphSpec(name, tuple(inputs), tuple(outputs))


GRAPHS = tuple(_spec(name) for name in GRAPH_NAMES)
BACKBONE, SAMPLER, HEADS = GRAPHS
# the sampler of a model whose sampler carries a recurrent state (S5): the contract's optional pair last
STATEFUL_SAMPLER = GraphSpec("sampler", SAMPLER.inputs + tuple(OPTIONAL["sampler"][0]),
                             SAMPLER.outputs + tuple(OPTIONAL["sampler"][1]))


def graph_specs(net: LVMNet) -> tuple[GraphSpec, ...]:
    """The three graphs of this model, in bundle order."""
    return BACKBONE, sampler_spec(net), HEADS


def sampler_spec(net: LVMNet) -> GraphSpec:
    return STATEFUL_SAMPLER if net.sampler.has_state else SAMPLER


def example_inputs(net: LVMNet, spec: GraphSpec, batch: int = 2, queries: int = 3, window: int = 16,
                   streams: int = 1):
    """Representative inputs for tracing / parity checks (real-looking ranges, not all zeros).
    ``streams``: sampler rows, each a different stream (its own memory, clip and clip times)."""
    cfg = net.cfg
    g = torch.Generator().manual_seed(0)
    s, P, d = cfg.backbone.image_size, cfg.backbone.tokens_per_frame, cfg.backbone.dim
    m, T, r = cfg.stream.memory_tokens, cfg.stream.clip_frames, cfg.svd.n_components
    if spec is BACKBONE:
        return (torch.randint(0, 256, (batch, s, s, 3), dtype=torch.uint8, generator=g),)
    rows = streams if spec.name == "sampler" else 1
    mem = torch.randn(rows, m, d, generator=g)
    mem_t = torch.sort(torch.rand(rows, m, generator=g) * 600.0).values
    mem_p = torch.randint(0, P, (rows, m), generator=g)
    mem_valid = (torch.rand(rows, m, generator=g) > 0.1).float()
    if spec.name == "sampler":
        start = 600.0 + 50.0 * torch.arange(rows, dtype=torch.float32)[:, None]  # each stream at its own time
        clip_t, clip_p = net.clip_coords(start + torch.arange(T, dtype=torch.float32)[None] / cfg.stream.fps)
        args = (mem, mem_t, mem_p, mem_valid, torch.randn(rows, T * P, d, generator=g), clip_t, clip_p.contiguous())
        if spec is STATEFUL_SAMPLER:  # a state of the size a long stream leaves (|x| ~ 1)
            args += (torch.randn(rows, *net.sampler.state_shape, generator=g),)
        return args
    q = torch.arange(queries) % 3
    basis = torch.linalg.qr(torch.randn(d, r, generator=g)).Q.T[None].contiguous()
    sv = torch.sort(torch.rand(1, r, generator=g) * 10, descending=True).values
    win = torch.tensor([[100.0, 400.0]]).repeat(queries, 1)
    times = torch.linspace(100.0, 400.0, window)[None].repeat(queries, 1)
    return (mem, mem_t, mem_p, mem_valid, basis, sv, q, q % cfg.heads.num_activities,
            torch.randn(queries, P, d, generator=g), win, times, torch.ones(queries, window))


class _Sampler(nn.Module):
    def __init__(self, net: LVMNet) -> None:
        super().__init__()
        self.sampler = net.sampler

    # named like the contract's inputs, which name the dynamic axes
    def forward(self, mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p):
        return self.sampler(mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p)


class _StatefulSampler(_Sampler):
    # the contract puts the state after the clip; the sampler takes it right after the memory
    def forward(self, mem, mem_t, mem_p, mem_valid, clip, clip_t, clip_p, sampler_state):
        return self.sampler(mem, mem_t, mem_p, mem_valid, sampler_state, clip, clip_t, clip_p)


def example_feeds(net: LVMNet, spec: GraphSpec, **kw) -> dict[str, np.ndarray]:
    """``example_inputs`` as an ONNX Runtime feed (numpy arrays by input name)."""
    return {n: a.numpy() for n, a in zip(spec.inputs, example_inputs(net, spec, **kw))}


def graph_module(net: LVMNet, spec: GraphSpec) -> nn.Module:
    if spec.name == "sampler":
        return _StatefulSampler(net) if net.sampler.has_state else _Sampler(net)
    return {"backbone": net.backbone, "heads": net.heads}[spec.name]


def dynamic_shapes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    """Dynamic input axes by name: frames batch; sampler streams (one row per camera stream, so one
    call serves every stream whose clip is ready); query batch and window length."""
    if spec is BACKBONE:
        return {"frames": {0: "n_frames"}}
    if spec.name == "sampler":
        return {name: {0: "n_streams"} for name in spec.inputs}
    return {"q_type": {0: "n_queries"}, "q_activity": {0: "n_queries"}, "q_object": {0: "n_queries"},
            "q_window": {0: "n_queries"}, "q_times": {0: "n_queries", 1: "window"},
            "q_mask": {0: "n_queries", 1: "window"}}


def export_graph(net: LVMNet, spec: GraphSpec, path: Path) -> Path:
    net.eval()
    # two sampler rows: a traced size of 1 would be specialised to a constant, losing the axis
    return export_module(graph_module(net, spec).eval(), example_inputs(net, spec, streams=2), spec, path)


def export_module(module: nn.Module, args: tuple, spec: GraphSpec, path: Path, shapes=None) -> Path:
    """``module`` traced on ``args`` into ``path`` with ``spec``'s names and dynamic input axes
    (``shapes``: a graph family's own ``dynamic_shapes``, default this module's); lvm-export slims it afterwards
    (``slim_and_check``)."""
    import warnings

    shapes = dynamic_shapes(spec) if shapes is None else shapes
    axes, fixed = output_axes(module, args, spec, shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(module, args, str(path), input_names=list(spec.inputs),
                          output_names=list(spec.outputs), opset_version=OPSET, dynamo=False,
                          dynamic_axes=axes, verbose=False)
    _fix_output_sizes(Path(path), fixed)
    return Path(path)


def output_axes(module: nn.Module, args: tuple, spec: GraphSpec, shapes) -> tuple[dict, dict]:
    """-> (the TorchScript exporter's ``dynamic_axes``, each output's fixed axes {name: {axis: size}}).

    ``shapes`` names the dynamic input axes (input name -> {axis: axis name}); each output axis that
    follows one of them gets the same name, so that the manifest and TensorRT's profiles read
    ``n_streams``, not an op's name. An output axis follows a name when it grows by one row as every
    input axis of that name does, and is fixed when no name moves it (eager PyTorch, one more call per
    name on the example inputs, their first row repeated)."""
    axes = {name: dict(shapes[name]) for name in spec.inputs if shapes.get(name)}
    where: dict[str, list[tuple[int, int]]] = {}  # axis name -> (input index, axis)
    for i, name in enumerate(spec.inputs):
        for axis, dim_name in shapes.get(name, {}).items():
            where.setdefault(dim_name, []).append((i, axis))
    moved: set[tuple[str, int]] = set()
    with torch.no_grad():
        base = _as_list(module(*args))
        for dim_name, at in where.items():
            grown = list(args)
            for i, axis in at:
                grown[i] = torch.cat([grown[i], grown[i].narrow(axis, 0, 1)], dim=axis)
            for name, out, ref in zip(spec.outputs, _as_list(module(*grown)), base):
                for axis in range(ref.dim()):
                    if out.shape[axis] != ref.shape[axis]:
                        moved.add((name, axis))
                    if out.shape[axis] == ref.shape[axis] + 1:
                        axes.setdefault(name, {})[axis] = dim_name
    fixed = {name: {axis: int(ref.shape[axis]) for axis in range(ref.dim()) if (name, axis) not in moved}
             for name, ref in zip(spec.outputs, base)}
    return axes, fixed


def _fix_output_sizes(raw: Path, fixed: dict[str, dict[int, int]]) -> None:
    """The trace's output axes that no input axis moves, written as their sizes: the TorchScript
    exporter names an axis its shape inference cannot follow (a reshape's) after the op instead."""
    import onnx

    model = onnx.load(str(raw))
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for axis, size in fixed.get(out.name, {}).items():
            if axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_value = size
    onnx.save(model, str(raw))


def _as_list(out) -> list[torch.Tensor]:
    return [out] if isinstance(out, torch.Tensor) else list(out.values() if isinstance(out, dict) else out)


# Fusing MatMul+Add into Gemm would reshape every (B, N, D) projection to 2-D and hide it from ORT's
# dynamic quantisation (MatMul only); TensorRT and ORT fuse the bias themselves.
SLIM_SKIP = ["FusionGemm"]


def slim_and_check(path: Path) -> "onnx.ModelProto":
    """onnxslim (constant folding, dead nodes, fusions) in place, then the ONNX checker.

    The I/O names are the runtime's contract: slimming must not touch them."""
    import onnx
    import onnxslim

    model = onnx.load(str(path))
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    inputs = {i.name: i for i in model.graph.input}
    slim = onnxslim.slim(model, skip_fusion_patterns=SLIM_SKIP)
    if slim is None:
        raise RuntimeError(f"onnxslim failed on {path.name}")
    kept = {i.name: i for i in slim.graph.input}
    if set(kept) < set(inputs):
        # onnxslim drops inputs no node reads (the answer graph does not read event_logit); the
        # contract still names them, and the runtime feeds every contract input, so they stay declared
        restored = [kept.get(n, inputs[n]) for n in names[0]]
        del slim.graph.input[:]
        slim.graph.input.extend(restored)
    if ([i.name for i in slim.graph.input], [o.name for o in slim.graph.output]) != names:
        raise RuntimeError(f"onnxslim changed the I/O names of {path.name}")
    onnx.checker.check_model(slim, full_check=True)
    onnx.save(slim, str(path))
    return slim


_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 2: "uint8", 3: "int8", 9: "bool", 11: "float64"}


def io_signature(model) -> dict[str, list[dict]]:
    """{"inputs": [{name, shape (ints or axis names), dtype}], "outputs": [...]} of an ONNX model."""
    def one(vi):
        tt = vi.type.tensor_type
        shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
        return {"name": vi.name, "shape": shape, "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type))}

    init = {t.name for t in model.graph.initializer}
    return {"inputs": [one(vi) for vi in model.graph.input if vi.name not in init],
            "outputs": [one(vi) for vi in model.graph.output]}


def check_contract(model, spec: GraphSpec) -> None:
    """The exported graph has the contract's I/O names, in order, with dtypes the runtime accepts."""
    sig = io_signature(model)
    got = (tuple(i["name"] for i in sig["inputs"]), tuple(o["name"] for o in sig["outputs"]))
    if got != (spec.inputs, spec.outputs):
        raise RuntimeError(f"{spec.name}: graph I/O {got} breaks the contract {(spec.inputs, spec.outputs)}")
    optional = {*OPTIONAL.get(spec.name, ({}, {}))[0], *OPTIONAL.get(spec.name, ({}, {}))[1]}
    want_in, want_out = contract_io(spec.name, bool(optional & {*spec.inputs, *spec.outputs}))
    for t, want in [(t, want_in) for t in sig["inputs"]] + [(t, want_out) for t in sig["outputs"]]:
        if t["dtype"] not in want[t["name"]]:
            raise RuntimeError(f"{spec.name}: '{t['name']}' is {t['dtype']}, the contract allows "
                               f"{' or '.join(want[t['name']])}")
