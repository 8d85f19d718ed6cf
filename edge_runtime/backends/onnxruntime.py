"""ONNX Runtime runner: CPU, or the CUDA execution provider with IOBinding when it is present.

On CPU the bound buffers are numpy arrays that ONNX Runtime writes into directly (IOBinding with
the buffer's pointer); with CUDA they are OrtValues on the GPU, so the sampler's memory never
leaves the device between clips.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edge_runtime.backends.base import BackendError, HostBuffer, Runner, TensorMeta

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

    def _activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed (pip install 'lvm-edge[runtime]')") from None
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        # Idle ORT threads spinning would steal the cores the intake and the API run on.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Masked attention (-1e4 bias) leaves softmax tails in the denormal range, which ran the
        # heads up to 2.9x slower on x86 CPUs depending on how much memory lay outside the window.
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        providers = self.providers or default_providers()
        try:
            self.session = ort.InferenceSession(self.path, so, providers=providers)
        except Exception as err:  # ORT raises several exception types for unreadable models
            raise BackendError(f"{self.path}: ONNX Runtime cannot load it ({_one_line(err)})") from None
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


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] if text else type(err).__name__
