"""INT8 forms of an ONNX graph: static Q/DQ (symmetric activations and weights, per-channel, bias left in
float — the form both ONNX Runtime and TensorRT load; or uint8 activations, which only ORT loads)
calibrated MinMax on real data, or ORT dynamic quantisation of the weight MatMuls (CPU only), and the
nodes a conv net or a transformer graph keeps out of them. On x86 without VNNI, ORT's INT8 kernels
saturate: CPU sessions here use the runtime's exact ones. Apart from precision.py's FP16 pass, which
rewrites the graph itself: these hand it to ``onnxruntime.quantization`` and take from precision.py
only its graph helpers and ``PrecisionError``; int8_choice.py chooses among the forms made here."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx

from export.onnx.precision import PrecisionError, consumers, producers

# What static Q/DQ quantises per graph kind: the backbone is a conv net (TensorRT fuses Q/DQ around
# Conv, Add and pools); transformer graphs quantise their projections only — the data path, TopK and
# the score path must not see Q/DQ.
STATIC_OPS_CONV = ("Conv", "Add", "MaxPool", "AveragePool", "Relu")
STATIC_OPS_TRANSFORMER = ("MatMul", "Gemm")


def conv_tails(model: onnx.ModelProto) -> list[tuple[int, set[str]]]:
    """A conv net's nodes kept FP32 in its static INT8 forms, a ladder of depths, shallowest first:
    [(j, nodes)] for j = 2, 2 + s, 2 + 2s, ... below its number of convolutions n (s = 2, or n / 10
    for a deep net, so the ladder has at most ~10 rungs). Each keeps the first convolution (it reads the
    normalised pixels) and the last j convolutions with every node after the first of them, in graph
    order (the tokens the sampler ranks, the memory keeps and the reader compares frame to frame).
    lvm-tiny's backbone, uint8 activations (MinMax): j = 2 moves its frame-to-frame token changes by
    22 % of their size and runs a 16-frame clip 2.0x faster than FP32; j = 6 by 10 % at 1.5x."""
    order = [n.name for n in model.graph.node]
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    first = set(convs[:1])
    step = max(2, round(len(convs) / 10))
    # a tail of every convolution but the first would quantise none
    return [(j, first | set(order[order.index(convs[-j]):])) for j in range(2, len(convs) - 1, step)]


def activation_matmuls(model: onnx.ModelProto) -> set[str]:
    """MatMuls of two activations (attention scores and mixing), not of an activation and weights.

    Static calibration of these needs every (Q, heads, N, N) attention tensor of every batch, which
    does not fit in memory for the edge configs, and quantising them costs the most accuracy (the
    heads' error grew ~10x in our measurements); TensorRT runs them in the graph's float type."""
    inits = {t.name for t in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return {n.name for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and not (n.input[1] in inits or n.input[1] in consts)}


def static_qdq_options(symmetric: bool = True) -> dict:
    """Symmetric: the settings that load in both ORT and TensorRT (int8 zero points of 0).
    Asymmetric uint8 activations: ORT's preferred form on x86 CPUs, which TensorRT does not load."""
    if symmetric:
        return {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    return {"ActivationSymmetric": False, "WeightSymmetric": True, "QuantizeBias": False}


def quantize_int8_static(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]], *,
                         op_types: Sequence[str], exclude: Iterable[str] = (), symmetric: bool = True) -> dict:
    """Static INT8 Q/DQ calibrated (MinMax) on ``feeds`` (real data, never random)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if not feeds:
        raise PrecisionError("static INT8 needs calibration data and got none")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    exclude = sorted(set(exclude))
    act = QuantType.QInt8 if symmetric else QuantType.QUInt8
    extra = static_qdq_options(symmetric)
    quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=True, reduce_range=False,
                    activation_type=act, weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
                    extra_options=extra)
    m = onnx.load(str(dst))
    onnx.checker.check_model(m)
    return {"mode": "static_qdq" if symmetric else "static_qdq_u8", "format": "QDQ", "calibration": "MinMax",
            "per_channel": True, "op_types": list(op_types), "excluded_nodes": exclude,
            **static_qdq_options(symmetric), "activation_type": "int8" if symmetric else "uint8",
            "weight_type": "int8", "calibration_batches": len(feeds),
            "loads_in": ["onnxruntime", "tensorrt"] if symmetric else ["onnxruntime"],
            "qdq_nodes": count_ops(m, ("QuantizeLinear", "DequantizeLinear"))}


def quantize_int8_dynamic(src: Path, dst: Path, *, exclude: Iterable[str] = ()) -> dict:
    """Dynamic INT8 (weights int8 per-tensor, activations quantised per call) of the weight MatMuls."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = sorted(set(exclude))
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=False,
                     weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                     extra_options={"MatMulConstBOnly": True})
    m = onnx.load(str(dst))
    onnx.checker.check_model(m)
    return {"mode": "dynamic", "op_types": ["MatMul"], "MatMulConstBOnly": True, "weight_type": "int8",
            "excluded_nodes": exclude, "loads_in": ["onnxruntime"],
            "dynamic_ops": count_ops(m, ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"))}


def count_ops(model: onnx.ModelProto, ops: Iterable[str]) -> int:
    ops = set(ops)
    return sum(1 for n in model.graph.node if n.op_type in ops)
