"""The host a bundle runs on: which accelerators and libraries it has (``probe_host``), whether a
bundle's TensorRT plans fit it (``plan_mismatch``), and so which backend runs the bundle
(``choose_backend``): TensorRT where its plans fit, ONNX Runtime elsewhere, and why, in one line.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.backends.bundle import GRAPH_NAMES, Bundle, BundleError

@dataclass
class HostInfo:
    machine: str
    onnxruntime: str | None
    providers: list[str]
    tensorrt: str | None
    gpu: str | None
    compute_capability: str | None
    jetpack: str | None


def jetpack_version() -> str | None:
    """JetPack / L4T release on a Jetson, None elsewhere."""
    rel = Path("/etc/nv_tegra_release")
    if not rel.is_file():
        return None
    try:
        head = rel.read_text().split(",")
        major = head[0].split("R")[-1].strip()
        rev = next((p.split(":")[-1].strip() for p in head if "REVISION" in p), "0")
        return f"L4T {major}.{rev}"
    except (OSError, IndexError):
        return "L4T (unparsed)"


_HOST: HostInfo | None = None


def probe_host(refresh: bool = False) -> HostInfo:
    global _HOST
    if _HOST is not None and not refresh:
        return _HOST
    try:
        import onnxruntime as ort

        ort_v, providers = ort.__version__, list(ort.get_available_providers())
    except ImportError:
        ort_v, providers = None, []
    from edge_runtime.backends.tensorrt import device_info, tensorrt_version

    trt_v = tensorrt_version()
    dev = device_info() if (trt_v or "CUDAExecutionProvider" in providers or os.path.exists("/dev/nvidia0")) else {}
    _HOST = HostInfo(platform.machine(), ort_v, providers, trt_v, dev.get("gpu"), dev.get("compute_capability"),
                     jetpack_version())
    return _HOST


def plan_mismatch(bundle: Bundle, host: HostInfo) -> str | None:
    """Why the bundle's TensorRT plans cannot run here, in one line, or None when they can."""
    planned = [bundle.graphs[n] for n in GRAPH_NAMES]
    if not bundle.has_plans:
        missing = [g.name for g in planned if not g.plan]
        return f"no TensorRT plan for {', '.join(missing)} (exported without TensorRT)"
    if host.tensorrt is None:
        return "TensorRT is not installed on this host"
    plans = [g.plan for g in planned]
    diffs = []
    trt_v = sorted({str(p.get("tensorrt")) for p in plans})
    if trt_v != [host.tensorrt]:
        diffs.append(f"plans built with TensorRT {'/'.join(trt_v)}, host has {host.tensorrt}")
    cc = sorted({str(p.get("compute_capability")) for p in plans})
    gpus = "/".join(sorted({str(p.get("gpu")) for p in plans}))
    if host.compute_capability is None:
        diffs.append("no CUDA GPU found")
    elif cc != [host.compute_capability]:
        diffs.append(f"plans built for compute capability {'/'.join(cc)} ({gpus}), "
                     f"host GPU is {host.compute_capability} ({host.gpu})")
    missing = [g.plan_path.name for g in planned if not g.plan_path.is_file()]
    if missing:
        diffs.append(f"plan file(s) missing: {', '.join(missing)}")
    return "; ".join(diffs) if diffs else None


def choose_backend(bundle: Bundle, requested: str = "auto", host: HostInfo | None = None) -> tuple[str, str | None]:
    """-> (backend, note). ``note`` says in one line why TensorRT was not used, when it matters."""
    host = host or probe_host()
    if requested not in ("auto", "onnxruntime", "tensorrt"):
        raise BundleError(f"unknown backend '{requested}' (choose auto, onnxruntime or tensorrt)")
    why = plan_mismatch(bundle, host) if requested != "onnxruntime" else None
    if requested == "tensorrt":
        if why:
            raise BundleError(f"{bundle.path}: cannot use TensorRT: {why}")
        return "tensorrt", None
    if requested == "auto" and why is None:
        return "tensorrt", None
    if host.onnxruntime is None:
        raise BundleError("onnxruntime is not installed (pip install 'lvm-edge[runtime]')"
                          + (f"; TensorRT unusable: {why}" if why else ""))
    note = None
    if requested == "auto" and bundle.has_plans:
        note = f"TensorRT plans not used ({why}); running the ONNX graphs with ONNX Runtime"
    return "onnxruntime", note
