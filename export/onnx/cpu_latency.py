"""CPU latency (ONNX Runtime) of a bundle's graphs, timed interleaved with the FP32 graphs."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_runtime.backends.onnxruntime import create_session, int8_session_entries
from edge_runtime.query.answers import heads_rows_per_call

# which real call is timed: the same one at every precision (the 4th clip, the 2nd head batch),
# however many frames were read, so latencies of fp32 / fp16 / int8 bundles compare
TIMED_CALL = {"backbone": 0, "sampler": 3, "heads": 1, "reader": 1, "answer": 1}


def warmup(runs: int) -> int:
    return 3 if runs >= 10 else 1


def feed_shapes(feed: dict) -> dict:
    return {k: list(v.shape) for k, v in feed.items()}


def timed_feed(net, cfg, spec, feeds, reader=None) -> dict:
    """The call a graph is timed on: a real one from the stream, else example inputs of the runtime's sizes.
    ``reader``: the memory reader's file, for its graphs' example inputs."""
    from export.onnx.graphs import example_feeds

    if feeds is not None and getattr(feeds, spec.name):
        calls = getattr(feeds, spec.name)
        feed = calls[min(TIMED_CALL[spec.name], len(calls) - 1)]
    elif spec.name in ("reader", "answer"):
        from export.onnx import reader_graphs

        return reader_graphs.example_feeds(reader, cfg, spec, streams=1, queries=16)
    elif spec.name == "backbone":
        return example_feeds(net, spec, batch=cfg.stream.clip_frames)
    else:
        feed = example_feeds(net, spec, queries=16, window=cfg.heads.window_queries)
    if spec.name == "heads":  # no more query rows than the runtime puts in one call
        rows = heads_rows_per_call(cfg)
        feed = {k: v[:rows] if k.startswith("q_") else v for k, v in feed.items()}
    return feed


def graph_latency(precision: str, graph: Path, fp32_graph: Path, feed: dict, *, runs: int, threads: int) -> dict:
    """The manifest's latency entry of one graph; at a reduced precision with the FP32 median beside it."""
    paths = {precision: graph}
    if precision != "fp32":
        paths["fp32"] = fp32_graph
    lat = measure_latency(paths, feed, runs=runs, warmup=warmup(runs), threads=threads)
    entry = {**lat[precision], "inputs": feed_shapes(feed)}
    if "fp32" in lat and precision != "fp32":
        entry["fp32_median_ms"] = lat["fp32"]["median_ms"]
        entry["speedup_vs_fp32"] = round(lat["fp32"]["median_ms"] / max(lat[precision]["median_ms"], 1e-9), 3)
    return entry


def cpu_session(path: Path | str, threads: int = 2):
    """An ORT CPU session of the graph with the runtime's session options (denormals flushed, no
    spinning, exact INT8 kernels where the default ones saturate), so that parity and latency
    measure what the device runs."""
    return create_session(path, threads=threads)[0]


def _stats(ms: list[float]) -> dict:
    q = np.percentile(ms, [10, 50, 90])
    return {"median_ms": round(float(q[1]), 3), "p10_ms": round(float(q[0]), 3), "p90_ms": round(float(q[2]), 3),
            "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3), "runs": len(ms)}


def measure_latency(paths: dict[str, Path | str], feeds: dict[str, np.ndarray] | None, *, runs: int = 20,
                    warmup: int = 3, threads: int = 2, tick: Callable[[], None] | None = None,
                    feeds_of: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, dict]:
    """Median and spread of one call per model, runs interleaved (A B, B A, ...) so drift in the
    machine's speed hits every candidate alike. ``feeds_of``: each model's own feed (models whose
    inputs differ), instead of one ``feeds`` for all."""
    sessions = {k: cpu_session(p, threads) for k, p in paths.items()}
    feed = feeds_of or {k: feeds for k in sessions}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feed[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    order = list(sessions)
    for r in range(runs):
        for k in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            sessions[k].run(None, feed[k])
            times[k].append((time.perf_counter() - t0) * 1000.0)
        if tick:
            tick()
    out = {k: {**_stats(v), "threads": threads} for k, v in times.items()}
    for k, p in paths.items():  # timings taken on the exact (slower) INT8 kernels say so
        if int8_session_entries(p):
            out[k]["int8_kernels"] = "U8U8: ORT's U8S8 kernels saturate on this CPU"
    return out
