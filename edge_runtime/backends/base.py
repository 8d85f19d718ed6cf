"""The backend contract, after Polygraphy's runners: activate / infer(feed_dict) -> dict / deactivate.

A runner wraps one graph of a bundle. Its input and output metadata come from the bundle manifest
(the names are the contract, engines/README.md); activation checks the loaded graph against them
and ``infer`` checks every feed against them, so a wrong bundle fails with one line naming the
tensor instead of somewhere inside the library. Heavy libraries are imported in ``activate`` only.

Runners can also run on buffers they allocated themselves (``alloc`` / ``infer_bound``): that is
how the memory stays on the device between sampler calls. An output buffer bound as an input of
the same call is refused: TensorRT gives wrong results for it and ONNX Runtime does not promise
anything either.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

Dim = int | str | None  # a str / None is a dynamic axis


class BackendError(RuntimeError):
    """A graph that cannot be loaded or run as asked; the message is one line."""


class CacheMiss(BackendError):
    """A serialized engine the library refused (null deserialize): rebuild it or fall back."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> "TensorMeta":
        return cls(str(entry["name"]), np.dtype(entry["dtype"]),
                   tuple(d if isinstance(d, int) else (str(d) if d is not None else None) for d in entry["shape"]))

    def describe(self) -> str:
        return f"{self.dtype.name}[{','.join(str(d) if d is not None else '?' for d in self.shape)}]"

    def concrete(self, **dims: int) -> tuple[int, ...]:
        """The shape with named dynamic axes filled in (KeyError when one is not given)."""
        return tuple(d if isinstance(d, int) else dims[str(d)] for d in self.shape)

    def mismatch(self, dtype: np.dtype, shape: Sequence[Any]) -> str | None:
        """Why an array of ``dtype`` / ``shape`` does not fit, or None. Dynamic axes match anything."""
        if np.dtype(dtype) != self.dtype:
            return f"'{self.name}' is {np.dtype(dtype).name}, expected {self.dtype.name}"
        if len(shape) != len(self.shape):
            return f"'{self.name}' has shape {tuple(shape)}, expected {self.describe()}"
        for got, want in zip(shape, self.shape):
            if isinstance(want, int) and isinstance(got, int) and want >= 0 and got >= 0 and got != want:
                return f"'{self.name}' has shape {tuple(shape)}, expected {self.describe()}"
        return None


class Buffer(Protocol):
    """A fixed allocation a runner binds without copies (``Runner.alloc``): host memory or device
    memory. Shape, dtype and address never change after allocation, so binding one buffer set once
    and reusing it for every clip allocates nothing after start-up."""

    device: str  # "cpu" or "cuda": two buffers can only alias when they are on the same device

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def ptr(self) -> int:
        """Address of the first byte on ``device``, for binding and for the aliasing check."""
        ...

    def upload(self, arr: np.ndarray) -> None:
        """Copy a host array in (reshaped to ``shape``, cast to ``dtype``)."""
        ...

    def download(self) -> np.ndarray:
        """A host copy of the contents."""
        ...

    def fill_zero(self) -> None: ...

    def free(self) -> None:
        """Release the allocation now instead of at garbage collection."""
        ...


class HostBuffer:
    """A ``Buffer`` in host memory: what CPU runners bind."""
    device = "cpu"

    def __init__(self, shape: Sequence[int], dtype: np.dtype | type) -> None:
        self.array = np.zeros(tuple(shape), np.dtype(dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @property
    def ptr(self) -> int:
        return int(self.array.ctypes.data)

    def upload(self, arr: np.ndarray) -> None:
        np.copyto(self.array, np.asarray(arr).reshape(self.array.shape), casting="same_kind")

    def download(self) -> np.ndarray:
        return self.array.copy()

    def fill_zero(self) -> None:
        self.array.fill(0)

    def free(self) -> None:
        pass


def _span(buf: Any) -> tuple[str, int, int] | None:
    """(device, first byte, last byte) of a buffer or array, for the aliasing check."""
    if isinstance(buf, np.ndarray):
        if buf.nbytes == 0:
            return None
        return ("cpu", int(buf.ctypes.data), int(buf.ctypes.data) + buf.nbytes)
    ptr = getattr(buf, "ptr", None)
    if ptr is None:
        return None
    return (getattr(buf, "device", "cpu"), int(ptr), int(ptr) + int(buf.nbytes))


def check_no_alias(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """Refuse a binding where any output overlaps any input (the ping-pong rule)."""
    spans_in = {k: _span(v) for k, v in inputs.items()}
    for out_name, out in outputs.items():
        so = _span(out)
        if so is None:
            continue
        for in_name, si in spans_in.items():
            if si is not None and si[0] == so[0] and si[1] < so[2] and so[1] < si[2]:
                raise BackendError(f"output '{out_name}' is bound to the same memory as input '{in_name}'; "
                                   f"bind outputs to a second buffer set (ping-pong)")


class Runner(ABC):
    """One graph, one backend. Use as a context manager or call activate() / deactivate()."""

    backend = "base"

    def __init__(self, name: str, inputs: Sequence[TensorMeta], outputs: Sequence[TensorMeta]) -> None:
        self.name = name
        self.inputs = {t.name: t for t in inputs}
        self.outputs = {t.name: t for t in outputs}
        self.is_active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def get_input_metadata(self) -> dict[str, TensorMeta]:
        return dict(self.inputs)

    def get_output_metadata(self) -> dict[str, TensorMeta]:
        return dict(self.outputs)

    # -- running -----------------------------------------------------------------------------
    def check_feed(self, feed: Mapping[str, Any]) -> None:
        missing = [n for n in self.inputs if n not in feed]
        if missing:
            raise BackendError(f"{self.name}: missing input(s) {', '.join(missing)}")
        extra = [n for n in feed if n not in self.inputs]
        if extra:
            raise BackendError(f"{self.name}: unknown input(s) {', '.join(extra)}; "
                               f"the graph takes {', '.join(self.inputs)}")
        for n, meta in self.inputs.items():
            arr = feed[n]
            why = meta.mismatch(arr.dtype, arr.shape)
            if why:
                raise BackendError(f"{self.name}: input {why}")

    def infer(self, feed_dict: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Host arrays in, host arrays out (all outputs, or the ones named)."""
        if not self.is_active:
            raise BackendError(f"{self.name}: runner is not active (call activate() first)")
        feed = {k: np.ascontiguousarray(v) for k, v in feed_dict.items()}
        self.check_feed(feed)
        names = list(outputs) if outputs is not None else list(self.outputs)
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise BackendError(f"{self.name}: unknown output(s) {', '.join(unknown)}")
        return self._infer(feed, names)

    def alloc(self, shape: Sequence[int], dtype: np.dtype | type) -> Buffer:
        """A buffer this runner can bind without copies (host memory unless the backend says else)."""
        return HostBuffer(shape, dtype)

    def infer_bound(self, inputs: Mapping[str, Buffer | np.ndarray], outputs: Mapping[str, Buffer]) -> None:
        """Run with inputs / outputs given as buffers from ``alloc`` (inputs may also be host arrays).
        Outputs are written into the given buffers; none may share memory with an input."""
        if not self.is_active:
            raise BackendError(f"{self.name}: runner is not active (call activate() first)")
        check_no_alias(inputs, outputs)
        self.check_feed(inputs)
        for n, buf in outputs.items():
            if n not in self.outputs:
                raise BackendError(f"{self.name}: unknown output '{n}'")
            why = self.outputs[n].mismatch(buf.dtype, buf.shape)
            if why:
                raise BackendError(f"{self.name}: output buffer {why}")
        self._infer_bound(inputs, outputs)

    def _infer_bound(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        # Generic path: through host arrays. Backends with device buffers override this.
        feed = {k: (v if isinstance(v, np.ndarray) else v.download()) for k, v in inputs.items()}
        res = self._infer(feed, list(outputs))
        for n, buf in outputs.items():
            buf.upload(res[n])

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.backend}, {'active' if self.is_active else 'inactive'})>"
