"""Reduced-precision ONNX graphs: the FP16 pass (FP16 compute with FP32 I/O), and the graph helpers
(``prepare``, ``selection_path``, ``producers``, ``consumers``) the INT8 side uses too (int8_quant.py
makes the INT8 forms, int8_choice.py chooses among them).

FP16 policy (why each part stays FP32):
- LayerNormalization, ReduceMean/ReduceSum, Softmax, Sin/Cos/Exp/Log/Pow/Sqrt: statistics and
  transcendental functions lose the most in half precision.
- Everything computed from the graph inputs *before* a learned projection (Conv/MatMul/Gemm) or a
  normalisation: pixel normalisation, timestamps (fp16 has a 32 s step at 10 h, 1 s at 30 min),
  patch coordinates, masks, embedding look-ups, the residual stream, and the sampler's data path
  (the kept tokens and their timestamps are copied from the inputs, bit for bit).
- The selection path: every node from the last projection before a TopK to the TopK (the sampler's
  scores): near-ties would flip in fp16.
What runs in FP16 is the arithmetic in between: convolutions, matmuls and their activations.

``onnxconverter-common``'s converter (and its copy in onnxruntime.transformers) casts every float
graph input to fp16 first and round-trips blocked chains through fp16, which would round the memory
timestamps; the pass here decides a precision per tensor and inserts casts only at the boundaries.
"""
from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
NORM_OPS = frozenset({"LayerNormalization", "Softmax", "LogSoftmax", "BatchNormalization",
                      "InstanceNormalization", "GroupNormalization"})
FP32_OPS = frozenset({"LayerNormalization", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2",
                      "Softmax", "LogSoftmax", "TopK", "Sin", "Cos", "Exp", "Log", "Pow", "Sqrt",
                      "Reciprocal", "Range", "CumSum", "BatchNormalization", "InstanceNormalization",
                      "GroupNormalization", "NonMaxSuppression", "RoiAlign"})
# ops whose output dtype comes from an attribute we do not rewrite: leave them alone
_DTYPE_ATTR_OPS = frozenset({"EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform",
                             "RandomUniformLike", "Multinomial", "Bernoulli", "SequenceEmpty"})
# inputs that must stay float32 even when the node runs in fp16
_ALWAYS_FLOAT_INPUTS = {"Resize": (2,), "Upsample": (1,)}
FP16_MAX = 65504.0


class PrecisionError(RuntimeError):
    """A graph that could not be converted; the message is one line."""


# ----------------------------------------------------------------------------------------------
# graph helpers

def _name_nodes(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def _lift_constants(model: onnx.ModelProto) -> None:
    """Constant nodes with a tensor value -> initializers (one place to convert constants)."""
    g = model.graph
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            if i:
                out[i].append(n)
    return out


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Named nodes, constants as initializers, inferred types for every tensor."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node
           for a in n.attribute):
        raise PrecisionError("graphs with subgraphs (If/Loop/Scan) are not supported by the precision passes")
    _name_nodes(model)
    _lift_constants(model)
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def selection_path(model: onnx.ModelProto) -> set[str]:
    """Nodes from the last projection (inclusive) before each TopK up to the TopK: the scores."""
    prod = producers(model)
    keep: set[str] = set()
    for n in model.graph.node:
        if n.op_type != "TopK":
            continue
        todo = deque([n])
        while todo:
            cur = todo.popleft()
            if cur.name in keep:
                continue
            keep.add(cur.name)
            if cur.op_type in COMPUTE_OPS or cur.op_type in NORM_OPS:
                continue  # the projection is the last thing kept; normalisations stay FP32 anyway
            for i in cur.input[:1] if cur.op_type == "TopK" else cur.input:
                if i in prod:
                    todo.append(prod[i])
    return keep


def input_derived(model: onnx.ModelProto) -> set[str]:
    """Nodes reachable from a graph input without passing a projection or a normalisation."""
    cons = consumers(model)
    init = {t.name for t in model.graph.initializer}
    seen: set[str] = set()
    todo = deque(vi.name for vi in model.graph.input if vi.name not in init)
    while todo:
        name = todo.popleft()
        for n in cons.get(name, []):
            if n.name in seen or n.op_type in COMPUTE_OPS or n.op_type in NORM_OPS:
                continue
            seen.add(n.name)
            todo.extend(o for o in n.output if o)
    return seen


def fp16_policy(model: onnx.ModelProto) -> dict[str, set[str]]:
    """-> {"fp32": node names kept FP32 (with the reason sets), "fp16": converted node names}."""
    types = _elem_types(model)
    by_op = {n.name for n in model.graph.node if n.op_type in FP32_OPS or n.op_type in _DTYPE_ATTR_OPS}
    derived = input_derived(model)
    select = selection_path(model)
    fp32 = by_op | derived | select
    fp16 = set()
    for n in model.graph.node:
        if n.name in fp32:
            continue
        if any(types.get(t) == FLOAT for t in list(n.input) + list(n.output) if t):
            fp16.add(n.name)
    return {"fp16": fp16, "fp32": fp32, "fp32_by_op": by_op, "fp32_input_derived": derived,
            "fp32_selection": select}


# ----------------------------------------------------------------------------------------------
# FP16

def _to_fp16_tensor(t: onnx.TensorProto, name: str | None = None) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t).astype(np.float32)
    arr = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(arr, name if name is not None else t.name)


def convert_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] | None = None) -> tuple[onnx.ModelProto, dict]:
    """FP16 compute with FP32 graph I/O. ``keep_fp32``: extra node names to keep in FP32.

    Returns (model, info) with the node counts per precision and the casts inserted."""
    model = prepare(model)
    g = model.graph
    pol = fp16_policy(model)
    fp16 = pol["fp16"] - set(keep_fp32 or ())
    types = _elem_types(model)
    inits = {t.name: t for t in g.initializer}
    cons = consumers(model)
    graph_outputs = {o.name for o in g.output}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    def half_inputs(n):
        fixed = _ALWAYS_FLOAT_INPUTS.get(n.op_type, ())
        return [(i, x) for i, x in enumerate(n.input) if is_float(x) and i not in fixed]

    # initializers: convert in place when only fp16 nodes read them, else keep a fp16 copy
    init_users: dict[str, set[bool]] = defaultdict(set)
    for n in g.node:
        hi = {x for _, x in half_inputs(n)} if n.name in fp16 else set()
        for x in n.input:
            if x in inits and types.get(x) == FLOAT:
                init_users[x].add(x in hi)
    init_map: dict[str, str] = {}
    new_inits = []
    for name, users in init_users.items():
        if users == {True}:
            inits[name].CopyFrom(_to_fp16_tensor(inits[name]))
            init_map[name] = name
        elif True in users:
            new_inits.append(_to_fp16_tensor(inits[name], f"{name}/fp16"))
            init_map[name] = f"{name}/fp16"
    g.initializer.extend(new_inits)

    casts_in: dict[str, str] = {}   # fp32 tensor -> its fp16 cast
    pending_casts: dict[str, list[onnx.NodeProto]] = defaultdict(list)  # after producer (or "" = at start)
    prod = producers(model)
    graph_inputs = {vi.name for vi in g.input}

    def fp16_of(x: str) -> str:
        if x in init_map:
            return init_map[x]
        if x not in casts_in:
            y = f"{x}/fp16"
            casts_in[x] = y
            where = prod[x].name if x in prod else ""
            pending_casts[where].append(helper.make_node("Cast", [x], [y], to=FLOAT16, name=f"{x}/cast_fp16"))
        return casts_in[x]

    n_out_casts = 0
    rewired = []
    for n in g.node:
        if n.name not in fp16:
            continue
        for i, x in half_inputs(n):
            if x in prod and prod[x].name in fp16:
                continue  # already fp16 (renamed below)
            if x in graph_inputs or x in prod or x in inits:
                n.input[i] = fp16_of(x)
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16
        if n.op_type == "ConstantOfShape":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(_to_fp16_tensor(a.t, a.t.name))
        rewired.append(n)

    # outputs of fp16 nodes: rename to x/fp16; fp32 readers (and graph outputs) get a cast back
    for n in rewired:
        for j, x in enumerate(n.output):
            if not is_float(x):
                continue
            y = f"{x}/fp16"
            n.output[j] = y
            readers = cons.get(x, [])
            fp32_readers = [r for r in readers if r.name not in fp16 or
                            any(k == x for k in (r.input[i] for i in
                                                 _ALWAYS_FLOAT_INPUTS.get(r.op_type, ()) if i < len(r.input)))]
            for r in readers:
                if r.name in fp16:
                    for i, xi in enumerate(r.input):
                        if xi == x and i not in _ALWAYS_FLOAT_INPUTS.get(r.op_type, ()):
                            r.input[i] = y
            if fp32_readers or x in graph_outputs:
                pending_casts[n.name].append(helper.make_node("Cast", [y], [x], to=FLOAT, name=f"{x}/cast_fp32"))
                n_out_casts += 1

    ordered = list(pending_casts.get("", []))
    for n in g.node:
        ordered.append(n)
        ordered.extend(pending_casts.get(n.name, []))
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    info = {"fp16_nodes": len(fp16), "fp32_nodes": len(pol["fp32"]), "casts_to_fp16": len(casts_in),
            "casts_to_fp32": n_out_casts,
            "fp32_ops": sorted({n.op_type for n in model.graph.node if n.name in pol["fp32"]}),
            "fp16_ops": sorted({n.op_type for n in model.graph.node if n.name in fp16})}
    return model, info
