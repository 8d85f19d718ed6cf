"""INT8, chosen per graph by a rule that reads only the graph, the calibration data and this host's
CPU features -- never a clock. Choosing by measured speed made the bundle depend on how loaded the
machine was while it timed (near-equal forms swapped places from run to run, and with them whether
the accuracy gate passed); the same inputs must give the same bundle.

The candidates are the INT8 forms the target runs: symmetric Q/DQ (loads in ONNX Runtime and
TensorRT) always; for an ONNX Runtime target also Q/DQ with uint8 activations (convolutions: ORT's
x86 kernels want U8S8) or dynamic quantisation (transformer projections: weights int8, activations
quantised per call). Each is compared with PyTorch FP32 on the export's parity inputs (example
inputs and real calls from the calibration stream) in the runtime's own session, so on an x86 CPU
without VNNI the error is that of the exact INT8 kernels the device will run.

Every static form of the backbone (a conv net) keeps its two ends FP32 (``int8_quant.conv_ends``: the
first convolution, and the last convolutions with the nodes from them to the tokens); its
activations are calibrated MinMax on the calibration batches, its weights quantised per channel.

The rule (``choose``): the candidate closest to FP32 wins, ties by the fixed order of ``FORMS``;
the graph stays FP32 when even that candidate is outside the graph's budget (``within_budget``).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from export.onnx.parity import FP32_MIN_RECALL
from export.onnx.parity_check import spread
from export.onnx.ui import UI, quiet

# candidate order: earlier wins a tie; the portable form first
FORMS = ("static_qdq", "static_qdq_u8", "dynamic")
# A dense graph's INT8 outputs may differ from FP32 on average by at most this fraction of their
# magnitude (mean |diff| / max(1, max |FP32 output|), the worst output over the parity inputs). The
# mean, not the max: INT8 always leaves a few elements far off (one backbone token element of ~14
# moved by 6), and what answers read is the bulk.
DENSE_MEAN_SCALED = 0.005
# calibration batches per graph (spread over the whole source): MinMax calibration keeps every
# intermediate tensor of every batch, so the heads' (Q x (m + P + ...)) activations are kept few.
CALIB_BATCHES = {"backbone": 16, "sampler": 16, "heads": 8}
RULE = ("per graph, the INT8 candidate closest to PyTorch FP32 on the parity inputs (sampler: top-m "
        "recall, then kept-feature error; dense graphs: scaled mean, then scaled max abs error), ties by "
        "the order of 'order'; FP32 when that candidate is outside 'budget'. The backbone's static forms "
        "keep 'kept_fp32' FP32 (its first convolution; its last convolutions and the nodes from them to "
        "the tokens). No timing enters the choice.")


def int8_graphs(fp32_dir: Path, out_dir: Path, feeds, *, allowed: set[str], portable_reason: str | None,
                measure_parity: Callable[[object, Path], dict], ui: UI, specs) -> dict:
    """Write each graph into ``out_dir`` as INT8 (or FP32); -> per graph {precision, quantization}.

    ``portable_reason``: why only the symmetric Q/DQ form may be used (a TensorRT target,
    --int8-portable), or None for every form ONNX Runtime runs. ``measure_parity(spec, onnx_path)``:
    the export's parity of a candidate graph against PyTorch. ``specs``: the model's graph specs."""
    import onnx

    from edge_runtime.backends.cpu_features import s8s8_safe
    from export.onnx.int8_quant import (STATIC_OPS_CONV, STATIC_OPS_TRANSFORMER, activation_matmuls, conv_ends,
                                        quantize_int8_dynamic, quantize_int8_static)
    from export.onnx.precision import prepare, selection_path

    host = s8s8_safe()[1]
    cand_dir = Path(tempfile.mkdtemp(prefix="int8-", dir=fp32_dir.parent))
    info: dict[str, dict] = {}
    with ui.step("INT8: quantise, compare candidates with FP32, choose", total=len(specs)) as tick:
        for spec in specs:
            n = spec.name
            src = fp32_dir / f"{n}.onnx"
            if n not in allowed:
                shutil.copyfile(src, out_dir / f"{n}.onnx")
                info[n] = {"precision": "fp32",
                           "quantization": {"mode": "none", "reason": "kept FP32: not in --int8-graphs"}}
                tick()
                continue
            calib = spread(getattr(feeds, n), CALIB_BATCHES[n])
            prepared = prepare(onnx.load(str(src)))
            exclude = selection_path(prepared)
            qsrc = cand_dir / f"{n}.prepared.onnx"  # node names the exclusions refer to
            onnx.save(prepared, str(qsrc))
            conv = n == "backbone"
            ends = conv_ends(prepared) if conv else set()
            exclude |= ends
            static_exclude = exclude if conv else exclude | activation_matmuls(prepared)
            ops = STATIC_OPS_CONV if conv else STATIC_OPS_TRANSFORMER
            makers = {"static_qdq": lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                 exclude=static_exclude)}
            if portable_reason is None and conv:
                makers["static_qdq_u8"] = lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                          exclude=exclude, symmetric=False)
            if portable_reason is None and not conv:
                makers["dynamic"] = lambda p: quantize_int8_dynamic(qsrc, p, exclude=exclude)
            cands: dict[str, tuple[Path, dict]] = {}
            for kind, make in makers.items():
                p = cand_dir / f"{n}.{kind}.onnx"
                with quiet():
                    cands[kind] = (p, make(p))
            errs = {k: error_summary(measure_parity(spec, v[0])) for k, v in cands.items()}
            choice, reason = choose(errs)
            if portable_reason is not None:
                reason = (f"{portable_reason}: symmetric Q/DQ only, the form both TensorRT and ONNX Runtime "
                          f"load; {reason}")
            path, q = (src, {"mode": "none"}) if choice == "fp32" else cands[choice]
            q = {**q, "reason": reason, "rule": RULE,
                 "rule_inputs": {"order": [k for k in FORMS if k in cands], "budget": budget(spec.name),
                                 "error_vs": "pytorch fp32 on the parity inputs", "calibration_batches": len(calib),
                                 "host_int8": host, "kept_fp32": sorted(ends)},
                 "candidates": {k: {"error": e, "within_budget": within_budget(e)} for k, e in errs.items()}}
            shutil.copyfile(path, out_dir / f"{n}.onnx")
            info[n] = {"precision": "fp32" if choice == "fp32" else "int8", "quantization": q}
            tick()
    shutil.rmtree(cand_dir, ignore_errors=True)
    return info


def error_summary(par: dict) -> dict:
    """A candidate's distance from PyTorch FP32, from its parity result: what ``choose`` weighs."""
    if "topm_recall" in par:
        out = {"topm_recall": par["topm_recall"], "kept_feature_max_abs": par["kept_feature_max_abs"]}
        if "state_max_abs_scaled" in par:
            out["state_max_abs_scaled"] = par["state_max_abs_scaled"]
        return out
    outs = par["outputs"].values()
    return {"mean_abs_scaled": max(o["mean_abs"] / max(1.0, o["ref_max_abs"]) for o in outs),
            "max_abs_scaled": par["max_abs_scaled"], "max_abs": par["max_abs"]}


def budget(graph: str) -> dict:
    """What the chosen INT8 form of ``graph`` must keep (as recorded in the manifest)."""
    if graph == "sampler":
        return {"topm_recall": f">= {FP32_MIN_RECALL:g}"}
    return {"mean_abs_scaled": f"<= {DENSE_MEAN_SCALED:g}"}


def within_budget(err: dict) -> bool:
    """The sampler must keep the tokens FP32 keeps (the FP32 export's own recall bound: a moved score
    changes what the memory holds for the rest of the stream); dense graphs stay near FP32."""
    if "topm_recall" in err:
        return err["topm_recall"] >= FP32_MIN_RECALL
    return err["mean_abs_scaled"] <= DENSE_MEAN_SCALED


def _rank(kind: str, err: dict) -> tuple:
    if "topm_recall" in err:
        key = (1.0 - err["topm_recall"], err["kept_feature_max_abs"], err.get("state_max_abs_scaled", 0.0))
    else:
        key = (err["mean_abs_scaled"], err["max_abs_scaled"])
    return key + (FORMS.index(kind),)


def choose(errs: dict[str, dict]) -> tuple[str, str]:
    """-> (the chosen form or "fp32", why) from each candidate's ``error_summary``; see the module doc."""
    best = min(errs, key=lambda k: _rank(k, errs[k]))
    e = errs[best]
    said = (f"top-m recall {e['topm_recall']:.4f}" if "topm_recall" in e else
            f"scaled mean abs error {e['mean_abs_scaled']:.2e}, max {e['max_abs_scaled']:.2e}")
    others = "; ".join(f"{k} {_rank(k, errs[k])[0]:.3g}" for k in FORMS if k in errs and k != best)
    vs = f" (vs {others})" if others else ""
    if not within_budget(e):
        return "fp32", (f"kept FP32: the INT8 form closest to FP32, {best} ({said}), is outside the budget "
                        f"{budget('sampler' if 'topm_recall' in e else 'dense')}")
    return best, f"closest to FP32 of the candidates: {best} ({said}){vs}"
