"""ONNX Runtime runner: CPU, or the CUDA execution provider with IOBinding when it is present.

On CPU the bound buffers are numpy arrays that ONNX Runtime writes into directly (IOBinding with
the buffer's pointer); with CUDA they are OrtValues on the GPU, so the sampler's memory never
leaves the device between clips.

INT8 graphs on an x86 CPU without VNNI run with ONNX Runtime's exact U8U8 kernels (see
cpu_features.py): its default U8S8 kernels saturate there and give wrong answers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge_runtime.backends.base import BackendError, HostBuffer, Runner, TensorMeta
from edge_runtime.backends.cpu_features import EXACT_INT8_ENTRY, s8s8_safe

log = logging.getLogger("lvm_edge")

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def default_providers() -> list[str]:
    have = available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]


def create_session(path: str | Path, *, threads: int | None = None, providers: Sequence[str] | None = None,
                   flush_denormals: bool = True, name: str | None = None):
    """An ONNX Runtime session of the graph at ``path``, set up as the runtime runs it; the one place
    session options are written, so that what lvm-export and the benchmarks measure is what the
    device runs. -> (session, a note when the graph runs on the exact INT8 kernels, else None).

    ``threads``: intra-op threads (None: ONNX Runtime's default, every core). ``providers``: default
    CPU only. ``flush_denormals=False`` exists for diagnostics that measure what flushing buys.
    An unloadable graph raises BackendError (one line)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("onnxruntime is not installed (pip install 'lvm-edge[runtime]')") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    # Idle ORT threads spinning would steal the cores the intake and the API run on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if flush_denormals:
        # Masked attention (-1e4 bias) leaves softmax tails in the denormal range, which ran the
        # heads up to 2.9x slower on x86 CPUs depending on how much memory lay outside the window.
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    entries, note = _int8_plan(path, name or Path(path).stem)
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    try:
        session = ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # ORT raises several exception types for unreadable models
        raise BackendError(f"{path}: ONNX Runtime cannot load it ({_one_line(err)})") from None
    return session, note


class OrtCudaBuffer:
    """A fixed OrtValue in GPU memory."""
    device = "cuda"

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type, device_id: int = 0) -> None:
        import onnxruntime as ort

        self._dtype = np.dtype(dtype)
        self._shape = tuple(int(s) for s in shape)
        self.value = ort.OrtValue.ortvalue_from_shape_and_type(list(self._shape), self._dtype.type, "cuda", device_id)
        self.fill_zero()

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)
    nbytes = property(lambda self: int(np.prod(self._shape)) * self._dtype.itemsize)
    ptr = property(lambda self: int(self.value.data_ptr()))

    def upload(self, arr: np.ndarray) -> None:
        self.value.update_inplace(np.ascontiguousarray(np.asarray(arr).reshape(self._shape), self._dtype))

    def download(self) -> np.ndarray:
        return self.value.numpy()

    def fill_zero(self) -> None:
        self.upload(np.zeros(self._shape, self._dtype))

    def free(self) -> None:
        self.value = None


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str, name: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta], *,
                 threads: int | None = None, providers: Sequence[str] | None = None, device_id: int = 0) -> None:
        super().__init__(name, inputs, outputs)
        self.path = str(path)
        self.threads = threads
        self.providers = list(providers) if providers else None
        self.device_id = device_id
        self.session = None
        self.device = "cpu"
        self.int8_note: str | None = None  # set when the graph runs with the exact INT8 kernels

    def _activate(self) -> None:
        self.session, self.int8_note = create_session(self.path, threads=self.threads,
                                                      providers=self.providers or default_providers(), name=self.name)
        if self.int8_note:
            log.warning(self.int8_note)
        self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        self._check_graph()

    def _check_graph(self) -> None:
        got_in = {i.name: i for i in self.session.get_inputs()}
        got_out = {o.name: o for o in self.session.get_outputs()}
        for kind, want, got in (("input", self.inputs, got_in), ("output", self.outputs, got_out)):
            for n, meta in want.items():
                if n not in got:
                    raise BackendError(f"{self.path}: graph has no {kind} '{n}' (it has {', '.join(got)})")
                dtype = _ORT_TYPES.get(got[n].type)
                shape = [d if isinstance(d, int) else None for d in got[n].shape]
                why = meta.mismatch(dtype if dtype is not None else np.void, shape)
                if why:
                    raise BackendError(f"{self.path}: manifest and graph disagree: {kind} {why} "
                                       f"(graph: {got[n].type} {got[n].shape})")

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        try:
            res = self.session.run(outputs, feed)
        except Exception as err:
            raise BackendError(f"{self.name}: inference failed ({_one_line(err)})") from None
        return dict(zip(outputs, res))

    def alloc(self, shape: Sequence[int], dtype: np.dtype | type):
        if self.device == "cuda":
            return OrtCudaBuffer(shape, dtype, self.device_id)
        return HostBuffer(shape, dtype)

    def _infer_bound(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        io = self.session.io_binding()
        for n, buf in inputs.items():
            if isinstance(buf, np.ndarray):
                io.bind_cpu_input(n, np.ascontiguousarray(buf))
            elif isinstance(buf, OrtCudaBuffer):
                io.bind_ortvalue_input(n, buf.value)
            elif isinstance(buf, HostBuffer):
                io.bind_cpu_input(n, buf.array)
            else:
                raise BackendError(f"{self.name}: cannot bind a {type(buf).__name__} as input '{n}'")
        for n, buf in outputs.items():
            if isinstance(buf, OrtCudaBuffer):
                io.bind_ortvalue_output(n, buf.value)
            elif isinstance(buf, HostBuffer):
                io.bind_output(n, "cpu", 0, buf.dtype.type, list(buf.shape), buf.ptr)
            else:
                raise BackendError(f"{self.name}: cannot bind a {type(buf).__name__} as output '{n}'")
        try:
            self.session.run_with_iobinding(io)
        except Exception as err:
            raise BackendError(f"{self.name}: inference failed ({_one_line(err)})") from None
        # ORT may hand back its own allocation instead of writing in place; make sure the result
        # is in our buffer either way.
        for (n, buf), val in zip(outputs.items(), io.get_outputs()):  # bound in this order
            if isinstance(buf, HostBuffer) and val.data_ptr() != buf.ptr:
                buf.upload(val.numpy())


# -- INT8 on CPUs whose kernels saturate ---------------------------------------------------------

_EXACT_INT8_LOADED: dict[str, str] = {}  # graph path -> its INT8 form, where this process did so


def int8_session_entries(path: str | Path) -> dict[str, str]:
    """Session config entries an ONNX Runtime session of this graph needs on this host: the exact
    U8U8 INT8 kernels where the default ones saturate and the graph has INT8 compute, else none."""
    return _int8_plan(path, Path(path).stem)[0]


def int8_doctor_row() -> tuple[str, str, bool | None]:
    """(name, value, ok) for ``lvm-edge doctor``: how INT8 graphs run on this CPU with ONNX Runtime."""
    safe, reason = s8s8_safe()
    if safe:
        return "INT8 on ORT CPU", f"{reason}; INT8 graphs run as exported", True
    loaded = "; ran so: " + ", ".join(f"{Path(p).name} ({f})" for p, f in _EXACT_INT8_LOADED.items()) \
        if _EXACT_INT8_LOADED else ""
    return ("INT8 on ORT CPU", f"{reason}; INT8 graphs run with ONNX Runtime's exact U8U8 kernels "
            f"({EXACT_INT8_ENTRY}=1), slower than U8S8{loaded}", None)


def _int8_plan(path: str | Path, name: str) -> tuple[dict[str, str], str | None]:
    safe, reason = s8s8_safe()
    if safe:
        return {}, None
    form = int8_form(path)
    if form is None:
        return {}, None
    _EXACT_INT8_LOADED[str(path)] = form
    return {EXACT_INT8_ENTRY: "1"}, (f"{name}: {form} INT8 graph, {reason}; running it on ONNX Runtime's "
                                     f"exact U8U8 kernels ({EXACT_INT8_ENTRY}=1, slower)")


_DYNAMIC_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
                          "MatMulIntegerToFloat", "DynamicQuantizeLSTM"})
_QOPERATOR_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "QAttention"})
_INT8, _UINT8 = 3, 2  # TensorProto.DataType


def int8_form(path: str | Path) -> str | None:
    """The INT8 compute a graph holds, e.g. "S8S8 Q/DQ", "U8S8 Q/DQ", "dynamic": what ONNX
    Runtime runs on its integer kernels. None: none (float graphs, weight-only Q/DQ), or the file
    cannot be read (loading it reports that). Read from the protobuf directly: the device side
    installs onnxruntime, not onnx."""
    try:
        ops, q_zero_points, dtypes = _graph_summary(Path(path).read_bytes())
    except (OSError, ValueError, IndexError):
        return None
    forms = []
    zp_types = {dtypes.get(z) for z in q_zero_points}
    if _INT8 in zp_types:
        forms.append("S8S8 Q/DQ")
    if _UINT8 in zp_types or "" in q_zero_points:  # no zero point: uint8
        forms.append("U8S8 Q/DQ")
    if q_zero_points and not forms:  # zero points of another type, or computed in the graph
        forms.append("Q/DQ")
    if ops & _DYNAMIC_OPS:
        forms.append("dynamic")
    if ops & _QOPERATOR_OPS:
        forms.append("QOperator")
    return ", ".join(forms) or None


def _graph_summary(data: bytes) -> tuple[set[str], list[str], dict[str, int]]:
    """-> (op types, zero-point input of each QuantizeLinear ("" when absent), tensor name -> data
    type of initializers and Constant outputs). ModelProto.graph is field 7; GraphProto.node 1,
    .initializer 5; NodeProto.input 1, .output 2, .op_type 4, .attribute 5; AttributeProto.t 5;
    TensorProto.data_type 2, .name 8."""
    ops: set[str] = set()
    zps: list[str] = []
    dtypes: dict[str, int] = {}
    for field, graph in _fields(memoryview(data)):
        if field != 7:
            continue
        for gf, item in _fields(graph):
            if gf == 5:
                dt, tname = _tensor_type(item)
                dtypes[tname] = dt
            elif gf == 1:
                op, inputs, outputs, const_type = "", [], [], None
                for nf, v in _fields(item):
                    if nf == 4:
                        op = bytes(v).decode()
                    elif nf == 1:
                        inputs.append(bytes(v).decode())
                    elif nf == 2:
                        outputs.append(bytes(v).decode())
                    elif nf == 5:
                        const_type = next((_tensor_type(t)[0] for af, t in _fields(v) if af == 5), const_type)
                ops.add(op)
                if op == "QuantizeLinear":
                    zps.append(inputs[2] if len(inputs) > 2 else "")
                elif op == "Constant" and const_type is not None and outputs:
                    dtypes[outputs[0]] = const_type
    return ops, zps, dtypes


def _tensor_type(tensor: memoryview) -> tuple[int, str]:
    dt, name = 0, ""
    for f, v in _fields(tensor):
        if f == 2:
            dt = v
        elif f == 8:
            name = bytes(v).decode()
    return dt, name


def _fields(buf: memoryview):
    """(field number, value) of a protobuf message: ints for varints, memoryviews for
    length-delimited fields; fixed-width fields are skipped (yielded as None)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated protobuf")
        yield key >> 3, value


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] if text else type(err).__name__
