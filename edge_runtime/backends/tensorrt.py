"""TensorRT runner (TensorRT 10 API) with cuda-python device buffers.

Written against the TensorRT 10 Python API: ``trt.Runtime.deserialize_cuda_engine``, named I/O
tensors (``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``), ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3``. Device memory comes from cuda-python
(``cuda.bindings.runtime``, or the older ``cuda.cudart``); pycuda is not needed.

A plan TensorRT refuses (``deserialize_cuda_engine`` returns None: another TensorRT version or GPU)
is a cache miss, raised as ``CacheMiss`` so the caller falls back to the ONNX graph with ONNX
Runtime and tells the user to rebuild -- never a crash.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edge_runtime.backends.base import BackendError, CacheMiss, HostBuffer, Runner, TensorMeta


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendError("cuda-python is not installed (pip install 'lvm-edge[trt]')") from None
    return cudart


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("TensorRT is not installed (JetPack ships it; on x86 see 'lvm-edge[trt]')") from None
    return trt


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt
    except Exception:  # a broken install is as good as none here
        return None
    return str(trt.__version__)


def _check(result):
    """cuda-python returns (err, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(err) if not hasattr(err, "value") else int(err.value)
    if code != 0:
        name = getattr(err, "name", str(err))
        raise BackendError(f"CUDA call failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class CudaBuffer:
    """A fixed allocation in GPU memory (cudaMalloc)."""
    device = "cuda"

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type) -> None:
        self._cudart = import_cudart()
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._ptr = int(_check(self._cudart.cudaMalloc(max(self.nbytes, 1))))
        self.fill_zero()

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)
    nbytes = property(lambda self: int(np.prod(self._shape)) * self._dtype.itemsize)
    ptr = property(lambda self: self._ptr)

    def upload(self, arr: np.ndarray) -> None:
        host = np.ascontiguousarray(np.asarray(arr).reshape(self._shape), self._dtype)
        _check(self._cudart.cudaMemcpy(self._ptr, host.ctypes.data, self.nbytes,
                                       self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def download(self) -> np.ndarray:
        host = np.empty(self._shape, self._dtype)
        _check(self._cudart.cudaMemcpy(host.ctypes.data, self._ptr, self.nbytes,
                                       self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return host

    def fill_zero(self) -> None:
        _check(self._cudart.cudaMemset(self._ptr, 0, max(self.nbytes, 1)))

    def free(self) -> None:
        if self._ptr:
            self._cudart.cudaFree(self._ptr)
            self._ptr = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, plan_path: str | Path, name: str, inputs: Sequence[TensorMeta],
                 outputs: Sequence[TensorMeta]) -> None:
        super().__init__(name, inputs, outputs)
        self.path = str(plan_path)
        self._lock = threading.Lock()  # one execution context: one call at a time
        self._scratch: dict[str, CudaBuffer] = {}
        self.engine = self.context = self._stream = self._runtime = None

    def _activate(self) -> None:
        trt = import_tensorrt()
        cudart = import_cudart()
        self._cudart = cudart
        try:
            data = Path(self.path).read_bytes()
        except OSError as err:
            raise BackendError(f"{self.path}: cannot read plan ({err.strerror})") from None
        logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise CacheMiss(f"{self.path}: TensorRT {trt.__version__} could not deserialize the plan "
                            f"(built by another TensorRT version or for another GPU); rebuild it with lvm-export")
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = _check(cudart.cudaStreamCreate())
        self._check_engine(trt)

    def _check_engine(self, trt) -> None:
        io = {}
        for i in range(self.engine.num_io_tensors):
            n = self.engine.get_tensor_name(i)
            io[n] = (self.engine.get_tensor_mode(n), np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))),
                     [int(d) for d in self.engine.get_tensor_shape(n)])
        for kind, mode, want in (("input", trt.TensorIOMode.INPUT, self.inputs),
                                 ("output", trt.TensorIOMode.OUTPUT, self.outputs)):
            for n, meta in want.items():
                if n not in io or io[n][0] != mode:
                    raise BackendError(f"{self.path}: plan has no {kind} '{n}'")
                why = meta.mismatch(io[n][1], [d if d >= 0 else None for d in io[n][2]])
                if why:
                    raise BackendError(f"{self.path}: manifest and plan disagree: {kind} {why}")

    def _deactivate(self) -> None:
        for buf in self._scratch.values():
            buf.free()
        self._scratch.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self.context = self.engine = self._stream = self._runtime = None

    def alloc(self, shape: Sequence[int], dtype: np.dtype | type) -> CudaBuffer:
        return CudaBuffer(shape, dtype)

    def _scratch_for(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> CudaBuffer:
        """Grow-only device buffer per tensor: allocation stops once the largest batch was seen."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._scratch.get(name)
        if buf is None or buf.nbytes < nbytes or buf.dtype != dtype:
            if buf is not None:
                buf.free()
            buf = self._scratch[name] = CudaBuffer((max(nbytes // dtype.itemsize, 1),), dtype)
        return buf

    def _run(self) -> None:
        if not self.context.execute_async_v3(int(self._stream)):
            raise BackendError(f"{self.name}: TensorRT execution failed")

    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            for n, arr in feed.items():
                self.context.set_input_shape(n, tuple(arr.shape))
                buf = self._scratch_for(n, arr.shape, arr.dtype)
                _check(cudart.cudaMemcpyAsync(buf.ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
                self.context.set_tensor_address(n, buf.ptr)
            host = {}
            for n in self.outputs:  # every output needs an address, wanted or not
                shape = tuple(int(d) for d in self.context.get_tensor_shape(n))
                if any(d < 0 for d in shape):
                    raise BackendError(f"{self.name}: output '{n}' has an unresolved shape {shape}")
                dtype = self.outputs[n].dtype
                buf = self._scratch_for("out:" + n, shape, dtype)
                self.context.set_tensor_address(n, buf.ptr)
                host[n] = (np.empty(shape, dtype), buf)
            self._run()
            for n in outputs:
                arr, buf = host[n]
                _check(cudart.cudaMemcpyAsync(arr.ctypes.data, buf.ptr, arr.nbytes, d2h, self._stream))
            _check(cudart.cudaStreamSynchronize(self._stream))
        return {n: host[n][0] for n in outputs}

    def _infer_bound(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        with self._lock:
            for n, buf in inputs.items():
                self.context.set_input_shape(n, tuple(buf.shape))
                if isinstance(buf, (np.ndarray, HostBuffer)):
                    arr = buf if isinstance(buf, np.ndarray) else buf.array
                    arr = np.ascontiguousarray(arr)
                    dev = self._scratch_for(n, arr.shape, arr.dtype)
                    _check(cudart.cudaMemcpyAsync(dev.ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream))
                    self.context.set_tensor_address(n, dev.ptr)
                else:
                    self.context.set_tensor_address(n, buf.ptr)
            for n in self.outputs:
                if n in outputs and isinstance(outputs[n], CudaBuffer):
                    self.context.set_tensor_address(n, outputs[n].ptr)
                else:
                    shape = tuple(int(d) for d in self.context.get_tensor_shape(n))
                    self.context.set_tensor_address(n, self._scratch_for("out:" + n, shape, self.outputs[n].dtype).ptr)
            self._run()
            _check(cudart.cudaStreamSynchronize(self._stream))
            for n, buf in outputs.items():
                if not isinstance(buf, CudaBuffer):  # a host buffer: copy the result back
                    buf.upload(self._scratch["out:" + n].download()[: int(np.prod(buf.shape))])


def device_info() -> dict[str, Any]:
    """GPU name and compute capability via cuda-python; {} when there is no usable GPU."""
    try:
        cudart = import_cudart()
        n = _check(cudart.cudaGetDeviceCount())
        if not n:
            return {}
        props = _check(cudart.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}", "gpus": int(n)}
    except Exception:
        return {}
