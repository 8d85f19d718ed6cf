"""TensorRT plans from a bundle's ONNX graphs (only where TensorRT is installed; imported lazily).

Precision lives in the ONNX: FP16 as casts, INT8 as Q/DQ. Where TensorRT offers strongly typed
networks (10.x; always on in 11) the network is built strongly typed, so the casts and Q/DQ are
honoured exactly and no precision flag is set. Only an older, weakly typed TensorRT gets the FP16 /
INT8 builder flags the ONNX asks for — detected with ``hasattr``, never from version strings.
TF32 is turned off where the flag exists: FP32 parts of the graphs (LayerNorm, the sampler's scores)
are FP32 on purpose.

Every dynamic axis gets an optimisation profile (min / opt / max): backbone frames N, sampler
streams S (one row per camera; a plan serves at most ``Profile.streams[2]`` streams per call, fewer than the
ONNX allows: the execution context reserves activation memory for the largest shape), heads
queries Q and window length L. A persistent timing cache (``timing.cache`` in the bundle, carried
over from the previous bundle at the same place) makes rebuilds fast; a cache from another
TensorRT version or GPU is dropped and rebuilt, never trusted.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.atomic_write import atomic_write_bytes

TIMING_CACHE = "timing.cache"
DEFAULT_WORKSPACE = 1 << 30  # 1 GiB: enough for these graphs, small enough for an 8 GB Orin


class TensorRTBuildError(RuntimeError):
    """A plan TensorRT could not build; the message is one line."""


def available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class Profile:
    """(min, opt, max) of each dynamic axis: frames N, queries Q, window L, sampler streams S."""
    frames: tuple[int, int, int] = (1, 16, 64)
    queries: tuple[int, int, int] = (1, 16, 64)
    window: tuple[int, int, int] = (2, 64, 64)
    streams: tuple[int, int, int] = (1, 8, 64)

    @classmethod
    def for_config(cls, cfg, max_frames: int = 64, max_queries: int = 64) -> "Profile":
        T, L = cfg.stream.clip_frames, max(2, cfg.heads.window_queries)
        return cls(frames=(1, T, max(T, max_frames)), queries=(1, min(16, max_queries), max_queries),
                   window=(2, L, L))

    def shapes(self, signature: dict) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """min / opt / max for each input that has a named (dynamic) axis."""
        axis = {"n_frames": self.frames, "n_queries": self.queries, "window": self.window, "n_streams": self.streams}
        out = {}
        for t in signature["inputs"]:
            if all(isinstance(x, int) for x in t["shape"]):
                continue
            dims = []
            for x in t["shape"]:
                if isinstance(x, int):
                    dims.append((x, x, x))
                elif x in axis:
                    dims.append(axis[x])
                else:
                    raise TensorRTBuildError(f"input '{t['name']}' has dynamic axis '{x}' without a profile range")
            out[t["name"]] = tuple(tuple(d[i] for d in dims) for i in range(3))
        return out


def host_plan_info() -> dict:
    """TensorRT version, GPU, compute capability and JetPack release — the runtime's own probes, so
    the manifest says exactly what the runtime will compare."""
    import tensorrt as trt

    from edge_runtime.backends.tensorrt import device_info
    from edge_runtime.backends.host import jetpack_version

    dev = device_info()
    return {"tensorrt": str(trt.__version__), "gpu": dev.get("gpu"),
            "compute_capability": dev.get("compute_capability"), "jetpack": jetpack_version()}


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def _load_cache(trt, config, path: Path) -> tuple[object, str]:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return cache, ("reused" if data else "new")
    # written by another TensorRT version or GPU: start from an empty one rather than trust it
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache, "stale cache dropped"


def build_plan(onnx_path: Path, plan_path: Path, signature: dict, *, precision: str, profile: Profile,
               timing_cache: Path, workspace_bytes: int = DEFAULT_WORKSPACE,
               log: Callable[[str], None] | None = None) -> dict:
    """Parse ``onnx_path``, build a serialized plan to ``plan_path``; -> the manifest's plan entry."""
    import tensorrt as trt

    from export.onnx.bundle_writer import sha256_file

    t0 = time.time()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    typing = "weak"
    ntf = trt.NetworkDefinitionCreationFlag
    if hasattr(ntf, "STRONGLY_TYPED"):
        flags |= 1 << int(ntf.STRONGLY_TYPED)
        typing = "strong"
    elif hasattr(ntf, "EXPLICIT_BATCH"):  # TensorRT 8.x needs it; ignored from 10 on
        flags |= 1 << int(ntf.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTBuildError(f"{onnx_path.name}: TensorRT's ONNX parser failed: {' '.join(errs.split())[:300]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    flags_set = []
    bf = trt.BuilderFlag
    if typing == "weak":
        if precision in ("fp16", "int8") and hasattr(bf, "FP16"):
            config.set_flag(bf.FP16)
            flags_set.append("FP16")
        if precision == "int8" and hasattr(bf, "INT8"):
            config.set_flag(bf.INT8)  # Q/DQ in the ONNX; no calibrator
            flags_set.append("INT8")
    if hasattr(bf, "TF32"):
        try:
            config.clear_flag(bf.TF32)
            flags_set.append("-TF32")
        except Exception:  # strongly typed builds may reject precision flags altogether
            pass

    shapes = profile.shapes(signature)
    if shapes:
        prof = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            prof.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(prof)

    cache, cache_state = _load_cache(trt, config, timing_cache)
    if log:
        log(f"TensorRT: building {plan_path.name} ({typing}ly typed, timing cache {cache_state})")
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise TensorRTBuildError(f"{onnx_path.name}: TensorRT could not build a plan (see its log above)")
    atomic_write_bytes(plan_path, memoryview(blob))
    atomic_write_bytes(timing_cache, memoryview(cache.serialize()))
    info = host_plan_info()
    info.update({"path": plan_path.name, "sha256": sha256_file(plan_path), "size_bytes": plan_path.stat().st_size,
                 "typing": typing, "builder_flags": flags_set, "workspace_bytes": int(workspace_bytes),
                 "profile": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])} for k, v in shapes.items()},
                 "timing_cache": cache_state, "build_seconds": round(time.time() - t0, 1)})
    return info
