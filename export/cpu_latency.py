"""CPU latency (ONNX Runtime) of a bundle's graphs, timed interleaved with the FP32 graphs."""
from __future__ import annotations

from pathlib import Path

# which real call is timed: the same one at every precision (the 4th clip, the 2nd head batch),
# however many frames were read, so latencies of fp32 / fp16 / int8 bundles compare
TIMED_CALL = {"backbone": 0, "sampler": 3, "heads": 1}


def warmup(runs: int) -> int:
    return 3 if runs >= 10 else 1


def feed_shapes(feed: dict) -> dict:
    return {k: list(v.shape) for k, v in feed.items()}


def timed_feed(net, cfg, spec, feeds) -> dict:
    """The call a graph is timed on: a real one from the stream, else example inputs of the runtime's sizes."""
    from export.parity import example_feeds

    if feeds is not None and getattr(feeds, spec.name):
        calls = getattr(feeds, spec.name)
        return calls[min(TIMED_CALL[spec.name], len(calls) - 1)]
    if spec.name == "backbone":
        return example_feeds(net, spec, batch=cfg.stream.clip_frames)
    return example_feeds(net, spec, queries=16, window=cfg.heads.window_queries)


def graph_latency(precision: str, graph: Path, fp32_graph: Path, feed: dict, *, runs: int, threads: int) -> dict:
    """The manifest's latency entry of one graph; at a reduced precision with the FP32 median beside it."""
    from export.precision import measure_latency

    paths = {precision: graph}
    if precision != "fp32":
        paths["fp32"] = fp32_graph
    lat = measure_latency(paths, feed, runs=runs, warmup=warmup(runs), threads=threads)
    entry = {**lat[precision], "inputs": feed_shapes(feed)}
    if "fp32" in lat and precision != "fp32":
        entry["fp32_median_ms"] = lat["fp32"]["median_ms"]
        entry["speedup_vs_fp32"] = round(lat["fp32"]["median_ms"] / max(lat[precision]["median_ms"], 1e-9), 3)
    return entry
