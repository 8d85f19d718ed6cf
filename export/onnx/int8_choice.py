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

Every static form of the backbone (a conv net) comes at a ladder of depths (``int8_quant.conv_tails``):
its first convolution and its last 2, 4, ... convolutions with every node after them stay FP32
(tried shallowest first, and no deeper once a depth has a form within budget: a deeper one cannot
win); its activations are calibrated MinMax on the calibration batches, its weights quantised per
channel.
The backbone's budget also bounds how far its frame-to-frame token changes move (``motion_rel``):
the memory reader compares each token with the same patch one frame before and after, and those
changes are small beside the tokens, so an error far inside the tokens' own bound can still turn
"held still" into "turned" (lvm-tiny: with 29 % of the changes' size, the shipped reader's INT8 gate
failed two cells by 1.4-1.8 points; with 14 %, it passed, worst cell -0.7).

The rule (``choose``): of the candidates within the graph's budget (``within_budget``), the one
keeping the fewest convolutions FP32 wins (the most of the graph in INT8), then the one closest to
FP32, ties by the fixed order of ``FORMS``; the graph stays FP32 when no candidate is within budget.
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
# The backbone's frame-to-frame token changes (parity.motion_error on the parity inputs) may move by at
# most this share of their size. With the shipped reader, lvm-tiny's backbone failed the accuracy gate
# at 0.285 and 0.220 (its last 2 or 4 convolutions FP32) and passed at 0.139 (the last 6).
MOTION_REL = 0.15
# calibration batches per graph (spread over the whole source): MinMax calibration keeps every
# intermediate tensor of every batch, so the heads' (Q x (m + P + ...)) activations are kept few.
CALIB_BATCHES = {"backbone": 16, "sampler": 16, "heads": 8}
RULE = ("per graph, of the INT8 candidates within 'budget' on the parity inputs, the one keeping the fewest "
        "convolutions FP32, then the one closest to PyTorch FP32 (sampler: top-m recall, then kept-feature "
        "error; dense graphs: scaled mean, then scaled max abs error), ties by the order of 'order'; FP32 "
        "when none is within budget. The backbone's static forms come at a ladder of depths: its first "
        "convolution and its last 2, 4, ... convolutions with every node after them FP32 ('kept_fp32': the "
        "chosen one's), tried shallowest first up to the first depth with a candidate within budget. No "
        "timing enters the choice.")


def int8_graphs(fp32_dir: Path, out_dir: Path, feeds, *, allowed: set[str], portable_reason: str | None,
                measure_parity: Callable[[object, Path], dict], ui: UI, specs) -> dict:
    """Write each graph into ``out_dir`` as INT8 (or FP32); -> per graph {precision, quantization}.

    ``portable_reason``: why only the symmetric Q/DQ form may be used (a TensorRT target,
    --int8-portable), or None for every form ONNX Runtime runs. ``measure_parity(spec, onnx_path)``:
    the export's parity of a candidate graph against PyTorch. ``specs``: the model's graph specs."""
    import onnx

    from edge_runtime.backends.cpu_features import s8s8_safe
    from export.onnx.int8_quant import (STATIC_OPS_CONV, STATIC_OPS_TRANSFORMER, activation_matmuls, conv_tails,
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
            ops = STATIC_OPS_CONV if conv else STATIC_OPS_TRANSFORMER
            # rungs of candidates: name -> (maker, FP32 nodes beyond the selection path, convolutions
            # kept FP32); the backbone's, shallowest first
            rungs: list[dict[str, tuple]] = []
            if conv:
                forms = ("static_qdq",) if portable_reason is not None else ("static_qdq", "static_qdq_u8")
                for j, kept in conv_tails(prepared):
                    rungs.append({f"{form}/fp32-tail-{j}": (
                        lambda p, ex=exclude | kept, sym=form == "static_qdq":
                        quantize_int8_static(qsrc, p, calib, op_types=ops, exclude=ex, symmetric=sym), kept, j)
                        for form in forms})
            else:
                static_exclude = exclude | activation_matmuls(prepared)
                rung = {"static_qdq": (lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                     exclude=static_exclude), set(), 0)}
                if portable_reason is None:
                    rung["dynamic"] = (lambda p: quantize_int8_dynamic(qsrc, p, exclude=exclude), set(), 0)
                rungs.append(rung)
            makers: dict[str, tuple] = {}
            cands: dict[str, tuple[Path, dict]] = {}
            errs: dict[str, dict] = {}
            for rung in rungs:
                for kind, (make, _, _) in rung.items():
                    p = cand_dir / f"{n}.{kind.replace('/', '.')}.onnx"
                    with quiet():
                        cands[kind] = (p, make(p))
                    errs[kind] = error_summary(measure_parity(spec, p))
                makers.update(rung)
                # a deeper rung keeps more FP32, so it cannot win once one here is within budget
                if any(within_budget(errs[k]) for k in rung):
                    break
            depth = {k: v[2] for k, v in makers.items()}
            choice, reason = choose(errs, depth)
            if portable_reason is not None:
                reason = (f"{portable_reason}: symmetric Q/DQ only, the form both TensorRT and ONNX Runtime "
                          f"load; {reason}")
            path, q = (src, {"mode": "none"}) if choice == "fp32" else cands[choice]
            q = {**q, "candidate": choice, "reason": reason, "rule": RULE,
                 "rule_inputs": {"order": [k for k in FORMS if any(c.split("/")[0] == k for c in cands)],
                                 "budget": budget(spec.name), "error_vs": "pytorch fp32 on the parity inputs",
                                 "calibration_batches": len(calib), "host_int8": host,
                                 "kept_fp32": sorted(makers[choice][1]) if choice in makers else []},
                 "candidates": {k: {"error": e, "within_budget": within_budget(e), "fp32_convolutions": depth[k]}
                                for k, e in errs.items()}}
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
    out = {"mean_abs_scaled": max(o["mean_abs"] / max(1.0, o["ref_max_abs"]) for o in outs),
           "max_abs_scaled": par["max_abs_scaled"], "max_abs": par["max_abs"]}
    if "motion_rel" in par:
        out["motion_rel"] = par["motion_rel"]
    return out


def budget(graph: str) -> dict:
    """What the chosen INT8 form of ``graph`` must keep (as recorded in the manifest)."""
    if graph == "sampler":
        return {"topm_recall": f">= {FP32_MIN_RECALL:g}"}
    if graph == "backbone":
        return {"mean_abs_scaled": f"<= {DENSE_MEAN_SCALED:g}", "motion_rel": f"<= {MOTION_REL:g}"}
    return {"mean_abs_scaled": f"<= {DENSE_MEAN_SCALED:g}"}


def within_budget(err: dict) -> bool:
    """The sampler must keep the tokens FP32 keeps (the FP32 export's own recall bound: a moved score
    changes what the memory holds for the rest of the stream); dense graphs stay near FP32."""
    if "topm_recall" in err:
        return err["topm_recall"] >= FP32_MIN_RECALL
    return err["mean_abs_scaled"] <= DENSE_MEAN_SCALED and err.get("motion_rel", 0.0) <= MOTION_REL


def _rank(kind: str, err: dict, depth: int = 0) -> tuple:
    if "topm_recall" in err:
        key = (1.0 - err["topm_recall"], err["kept_feature_max_abs"], err.get("state_max_abs_scaled", 0.0))
    else:
        key = (err["mean_abs_scaled"], err["max_abs_scaled"])
    return (not within_budget(err), depth) + key + (FORMS.index(kind.split("/")[0]),)


def choose(errs: dict[str, dict], depth: dict[str, int] | None = None) -> tuple[str, str]:
    """-> (the chosen candidate or "fp32", why) from each candidate's ``error_summary`` and ``depth``
    (convolutions it keeps FP32; none: 0); see the module doc."""
    depth = depth or {}
    rank = {k: _rank(k, e, depth.get(k, 0)) for k, e in errs.items()}
    best = min(errs, key=rank.__getitem__)
    if not within_budget(errs[best]):  # none is: name the one closest to FP32
        best = min(errs, key=lambda k: rank[k][2:])
    e = errs[best]
    said = (f"top-m recall {e['topm_recall']:.4f}" if "topm_recall" in e else
            f"scaled mean abs error {e['mean_abs_scaled']:.2e}, max {e['max_abs_scaled']:.2e}"
            + (f", motion {e['motion_rel']:.3f}" if "motion_rel" in e else ""))
    others = "; ".join(f"{k} {rank[k][2]:.3g}" for k in sorted(errs, key=rank.__getitem__) if k != best)
    vs = f" (vs {others})" if others else ""
    if not within_budget(e):
        return "fp32", f"kept FP32: no INT8 form is within the budget {budget_of(e)}; the closest, {best} ({said})"
    kept = f", {depth[best]} convolutions FP32" if depth.get(best) else ""
    return best, f"within budget with the fewest FP32 convolutions, then closest to FP32: {best}{kept} ({said}){vs}"


def budget_of(err: dict) -> dict:
    if "topm_recall" in err:
        return budget("sampler")
    return budget("backbone" if "motion_rel" in err else "dense")
