"""Backends behind one runner contract (see base.py). Heavy libraries load on activate only."""
from __future__ import annotations

from edge_runtime.backends.base import BackendError, CacheMiss, HostBuffer, Runner, TensorMeta, check_no_alias

BACKENDS = ("onnxruntime", "tensorrt")

__all__ = ["BACKENDS", "BackendError", "CacheMiss", "HostBuffer", "Runner", "TensorMeta", "check_no_alias",
           "onnxruntime_runner", "tensorrt_runner"]


def onnxruntime_runner(path, name, inputs, outputs, *, threads=None, providers=None) -> Runner:
    from edge_runtime.backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, name, inputs, outputs, threads=threads, providers=providers)


def tensorrt_runner(path, name, inputs, outputs) -> Runner:
    from edge_runtime.backends.tensorrt import TensorRTRunner

    return TensorRTRunner(path, name, inputs, outputs)
