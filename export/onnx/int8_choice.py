"""INT8, chosen per graph: build the INT8 forms the target can run, time them against each other and
FP32 (interleaved, ONNX Runtime on the CPU), keep the fastest -- or FP32 where INT8 is not worth it.

The forms: symmetric Q/DQ (loads in ONNX Runtime and TensorRT), Q/DQ with uint8 activations
(convolutions: ORT's x86 kernels want U8S8) and dynamic quantisation (transformer projections:
weights int8, activations quantised per call; ORT only).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.onnx.cpu_latency import feed_shapes, warmup
from export.onnx.ui import UI, quiet
from export.onnx.parity_check import spread

MIN_INT8_SPEEDUP = 1.1  # below this an INT8 graph only costs accuracy: keep FP32
# calibration batches per graph (spread over the whole source): MinMax calibration keeps every
# intermediate tensor of every batch, so the heads' (Q x (m + P + ...)) activations are kept few.
CALIB_BATCHES = {"backbone": 16, "sampler": 16, "heads": 8}


def int8_graphs(fp32_dir: Path, out_dir: Path, feeds, *, allowed: set[str], portable_reason: str | None,
                measure_parity: Callable[[object, Path], dict], runs: int, threads: int, ui: UI, specs) -> dict:
    """Write each graph into ``out_dir`` as INT8 (or FP32); -> per graph {precision, quantization}.

    ``portable_reason``: why only the symmetric Q/DQ form may be used (a TensorRT target,
    --int8-portable), or None to measure every form. ``measure_parity(spec, onnx_path)``: the
    export's parity of a candidate graph against PyTorch. ``specs``: the model's three graph specs."""
    import onnx

    from export.onnx.cpu_latency import measure_latency
    from export.onnx.precision import (STATIC_OPS_CONV, STATIC_OPS_TRANSFORMER, activation_matmuls, prepare,
                                  quantize_int8_dynamic, quantize_int8_static, selection_path)

    cand_dir = Path(tempfile.mkdtemp(prefix="int8-", dir=fp32_dir.parent))
    info: dict[str, dict] = {}
    with ui.step("INT8: quantise, time candidates, choose", total=len(specs)) as tick:
        for spec in specs:
            n = spec.name
            src = fp32_dir / f"{n}.onnx"
            if n not in allowed:
                shutil.copyfile(src, out_dir / f"{n}.onnx")
                info[n] = {"precision": "fp32", "quantization": {"mode": "none", "reason": "kept FP32: not in --int8-graphs"}}
                tick()
                continue
            calib = spread(getattr(feeds, n), CALIB_BATCHES[n])
            prepared = prepare(onnx.load(str(src)))
            exclude = selection_path(prepared)
            qsrc = cand_dir / f"{n}.prepared.onnx"  # node names the exclusions refer to
            onnx.save(prepared, str(qsrc))
            conv = n == "backbone"
            static_exclude = exclude if conv else exclude | activation_matmuls(prepared)
            ops = STATIC_OPS_CONV if conv else STATIC_OPS_TRANSFORMER
            makers = {"static_qdq": lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                 exclude=static_exclude)}
            if portable_reason is None and conv:  # ORT's x86 kernels want uint8 activations (U8S8)
                makers["static_qdq_u8"] = lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                          exclude=exclude, symmetric=False)
            if portable_reason is None and not conv:  # transformer projections: weights int8, activations per call
                makers["dynamic"] = lambda p: quantize_int8_dynamic(qsrc, p, exclude=exclude)
            cands: dict[str, tuple[Path, dict]] = {}
            for kind, make in makers.items():
                p = cand_dir / f"{n}.{kind}.onnx"
                with quiet():
                    cands[kind] = (p, make(p))
            errs = {k: error_summary(measure_parity(spec, v[0])) for k, v in cands.items()}
            if len(cands) == 1:
                choice = "static_qdq"
                reason = f"{portable_reason}: symmetric Q/DQ, the form both TensorRT and ONNX Runtime load"
                lat = {}
            else:
                lat = measure_latency({"fp32": src, **{k: v[0] for k, v in cands.items()}}, calib[-1],
                                      runs=runs, warmup=warmup(runs), threads=threads)
                choice, reason = choose(lat, errs)
            path, q = (src, {"mode": "none"}) if choice == "fp32" else cands[choice]
            q = dict(q)
            q["reason"] = reason
            q["candidates"] = {k: {"latency": lat.get(k), "error": errs.get(k)} for k in ["fp32"] * bool(lat) + list(cands)}
            q["error_vs"] = "pytorch fp32 on the parity inputs"
            if lat:
                q["timed_with"] = feed_shapes(calib[-1])
            shutil.copyfile(path, out_dir / f"{n}.onnx")
            info[n] = {"precision": "fp32" if choice == "fp32" else "int8", "quantization": q}
            tick()
    shutil.rmtree(cand_dir, ignore_errors=True)
    return info


def error_summary(par: dict) -> dict:
    """A candidate's distance from PyTorch FP32, from its parity result: what ``choose`` weighs."""
    if "topm_recall" in par:
        return {"topm_recall": par["topm_recall"], "kept_feature_max_abs": par["kept_feature_max_abs"]}
    return {"max_abs": par["max_abs"],
            "mean_abs": float(np.mean([o["mean_abs"] for o in par["outputs"].values()]))}


def choose(lat: dict, errs: dict) -> tuple[str, str]:
    """Faster INT8 candidate by median latency; within 5% the more accurate one. A graph whose best
    INT8 form is not MIN_INT8_SPEEDUP x faster than FP32 stays FP32: there INT8 would only cost accuracy
    (on x86 the sampler's and heads' small MatMuls barely speed up, and a moved sampler score changes
    which tokens the memory keeps)."""
    names = [k for k in errs]
    names.sort(key=lambda k: lat[k]["median_ms"])
    fast, slow = names[0], names[-1]

    def badness(e: dict) -> float:
        return (1.0 - e["topm_recall"]) if "topm_recall" in e else e["mean_abs"]

    mf, ms, m32 = lat[fast]["median_ms"], lat[slow]["median_ms"], lat["fp32"]["median_ms"]
    runs = lat[fast]["runs"]
    if m32 < MIN_INT8_SPEEDUP * mf:
        return "fp32", (f"kept FP32: the fastest INT8 form ({fast} {mf:.1f} ms) is not {MIN_INT8_SPEEDUP:g}x faster "
                        f"than fp32 {m32:.1f} ms on this CPU (median of {runs} interleaved runs)")
    if len(names) > 1 and ms <= 1.05 * mf and badness(errs[slow]) < badness(errs[fast]):
        return slow, (f"{slow} within 5% of {fast} ({ms:.1f} vs {mf:.1f} ms, median of {runs} interleaved runs) "
                      f"and closer to FP32")
    others = ", ".join(f"{k} {lat[k]['median_ms']:.1f} ms" for k in names[1:])
    return fast, (f"fastest on this CPU: {fast} {mf:.1f} ms vs {others}; fp32 {m32:.1f} ms "
                  f"(median of {runs} interleaved runs)")
