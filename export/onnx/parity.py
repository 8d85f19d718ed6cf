"""Parity of exported graphs against the PyTorch model.

Dense outputs (backbone tokens, head outputs) are compared element-wise: max / mean absolute
difference, and the max scaled by the output's magnitude (``max_abs / max(1, max|reference|)``): the
FP32 bound is 1e-4 on that. Head outputs are compared where ``q_mask`` is 1 — padded decoder slots carry the
-1e4 mask, where one float32 ulp is ~1e-3, and no answer ever reads them.

The sampler is compared as *sets*: which tokens it kept, identified by (timestamp, patch index),
never slot by slot — TopK may order near-equal scores differently and that changes nothing. We also
check the kept tokens' features and timestamps are the inputs' own values (the data path is exact).
The memory reader's graphs ("reader", "answer") are dense; the reader, which reads the memories of
many streams in one call, is also checked row by row against each memory alone. The answer graph's
ranked answers (intervals, keyboxes) are compared where PyTorch's choices of anchor token and group
are clear of float rounding (``AnswerStep.decided``), and at a near-tie where both runtimes gave the
same answer all the same: at a near-tie the two runtimes may rank two equally good answers
differently, which is no export error; how many were set aside (at a near-tie and answered
differently) is reported and bounded (``FP32_MAX_TIED`` of the answers with support). Answers with next to no support ("not seen")
are reported and not compared: their place is decided by float rounding in the sigmoids' tails.
The sampler serves many camera streams in one call (a batch axis, one row per stream): every parity
input is also run as one row of a single batched call and must keep, row by row, what it keeps alone.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.onnx.cpu_latency import cpu_session
from export.onnx.graphs import BACKBONE, HEADS, SAMPLER, GraphSpec, example_feeds, sampler_spec

FP32_MAX_ABS = 1e-4
# outputs with a bound of their own. The answer step weights each keyframe's box by its nearness in time
# to tokens stamped in seconds since the stream began: float32 rounding of times near 1,800 s (~1e-4 s)
# moves those weights, and the boxes, by ~1e-4 with no export error. 1e-3 is 0.1 % of the frame.
FP32_OUTPUT_MAX_ABS = {"keyboxes": 1e-3}
FP32_MIN_RECALL = 0.99
# at most this share of the answer graph's ranked answers with support may sit at a near-tie (uncompared)
FP32_MAX_TIED = 0.2
_MASKED = {"boxes", "start_logits", "end_logits"}
_RANKED = {"intervals", "keyboxes"}


def torch_outputs(net, spec: GraphSpec, feed: dict[str, np.ndarray], module=None) -> list[np.ndarray]:
    """PyTorch's outputs of one graph on one feed. ``module``: the graph's module when it is not one
    of ``net``'s (the memory reader's graphs)."""
    import torch

    from export.onnx.graphs import graph_module

    args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in spec.inputs]
    with torch.no_grad():
        out = (module if module is not None else graph_module(net, spec)).eval()(*args)
    out = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in out]


def kept_ids(t: np.ndarray, p: np.ndarray, valid: np.ndarray) -> Counter:
    """Multiset of (time, patch) of the valid kept tokens of one memory (1, m)."""
    keep = valid.reshape(-1) > 0.5
    return Counter(zip(t.reshape(-1)[keep].tolist(), p.reshape(-1)[keep].tolist()))


def sampler_match(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> dict:
    """ref/out = (new_mem, new_mem_t, new_mem_p, new_mem_valid) for batch 1."""
    a, b = kept_ids(ref[1], ref[2], ref[3]), kept_ids(out[1], out[2], out[3])
    n = sum(a.values())
    common = sum((a & b).values())
    recall = common / n if n else 1.0
    # features of tokens both kept: must be the same input rows (exact copies in FP32 data paths)
    rows_ref = {(t, p): i for i, (t, p) in enumerate(zip(ref[1].reshape(-1).tolist(), ref[2].reshape(-1).tolist()))}
    feat_diff = 0.0
    for i, key in enumerate(zip(out[1].reshape(-1).tolist(), out[2].reshape(-1).tolist())):
        j = rows_ref.get(key)
        if j is not None and out[3].reshape(-1)[i] > 0.5:
            feat_diff = max(feat_diff, float(np.abs(out[0][0, i].astype(np.float64) - ref[0][0, j]).max()))
    res = {"topm_recall": recall, "kept": n, "kept_feature_max_abs": feat_diff,
           "valid_count_equal": bool(int(ref[3].sum()) == int(out[3].sum()))}
    if len(ref) > 4:  # the sampler's own recurrent state: dense, scaled like the dense graphs' outputs
        r, o = ref[4].astype(np.float64), out[4].astype(np.float64)
        res["state_max_abs_scaled"] = float(np.abs(r - o).max() / max(1.0, np.abs(r).max()))
    return res


def stack_streams(feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Batch-1 sampler feeds -> one feed whose row i is stream i."""
    return {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}


def streams_batch_match(net, sess, names: list[str], feeds: list[dict], alone: list[Sequence[np.ndarray]]) -> dict:
    """Every feed as one row of ONE batched call vs the same feed alone (``alone``: its batch-1
    outputs): per row the kept (time, patch) set and the kept features. A graph whose batch axis
    was specialised, or whose rows see each other, fails here. With a single feed a second stream
    (another example memory and clip) joins it, so the batch always holds different streams."""
    if len(feeds) < 2:
        extra = {n: a[1:2] for n, a in example_feeds(net, sampler_spec(net), streams=2).items()}
        feeds, alone = feeds + [extra], alone + [sess.run(names, extra)]
    out = sess.run(names, stack_streams(feeds))
    recalls, feats, same = [], [], 0
    for i, single in enumerate(alone):
        row = [o[i : i + 1] for o in out]
        m = sampler_match(single, row)
        recalls.append(m["topm_recall"])
        feats.append(m["kept_feature_max_abs"])
        same += all(np.array_equal(a, b) for a, b in zip(single, row))
    return {"streams": len(feeds), "topm_recall": float(min(recalls)), "kept_feature_max_abs": float(max(feats)),
            "rows_identical": int(same), "compared": "each row of one batched call vs that stream alone"}


def answer_decided(module, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(decided, supported), (Q, K) bool each: which of the answer graph's ranked answers PyTorch chose
    clear of any near-tie, and which found any support (``AnswerStep.decided``)."""
    import torch

    from export.onnx.reader_graphs import ANSWER

    args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in ANSWER.inputs]
    with torch.no_grad():
        decided, supported = module.decided(*args)
    return decided.numpy(), supported.numpy()


def dense_diff(spec: GraphSpec, feed: dict, ref: Sequence[np.ndarray], out: Sequence[np.ndarray],
               decided: np.ndarray | None = None) -> dict[str, dict]:
    """Per output: max / mean absolute difference and the reference's magnitude. ``decided`` (Q, K):
    the answer graph's ranked answers to compare (the rest sit at a near-tie)."""
    res = {}
    for name, r, o in zip(spec.outputs, ref, out):
        r64, o64 = r.astype(np.float64), o.astype(np.float64)
        diff = np.abs(r64 - o64)
        if spec is HEADS and name in _MASKED:
            mask = feed["q_mask"] > 0
            diff = diff[mask]
            r64 = r64[mask]
        if decided is not None and name in _RANKED:
            diff, r64 = diff[decided], r64[decided]
        res[name] = {"max_abs": float(diff.max()) if diff.size else 0.0,
                     "mean_abs": float(diff.mean()) if diff.size else 0.0,
                     "ref_max_abs": float(np.abs(r64).max()) if r64.size else 0.0}
    return res


def ranked_agree(spec: GraphSpec, ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> np.ndarray:
    """(Q, K) bool: the answer graph's k-th ranked answer is the same in both runtimes (its interval and
    keyboxes within the FP32 bounds, scaled by each output's largest value)."""
    same = None
    for name, r, o in zip(spec.outputs, ref, out):
        if name not in _RANKED:
            continue
        r64, o64 = r.astype(np.float64), o.astype(np.float64)
        bound = FP32_OUTPUT_MAX_ABS.get(name, FP32_MAX_ABS) * max(1.0, float(np.abs(r64).max()) if r64.size else 1.0)
        ok = (np.abs(r64 - o64) <= bound).reshape(r64.shape[0], r64.shape[1], -1).all(-1)
        same = ok if same is None else same & ok
    return same


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def motion_error(refs: Sequence[Sequence[np.ndarray]], outs: Sequence[Sequence[np.ndarray]]) -> float:
    """How far a backbone's frame-to-frame token changes are from PyTorch's: mean |d_out - d_ref| over
    mean |d_ref|, d = each normalised token minus the same patch's one frame before, over the
    consecutive frames of every call. The memory reader reads these changes (hold and inspect differ
    by them), and they are small beside the tokens: an error far below the tokens' own scale can
    still be a large share of them."""
    num = den = 0.0
    for ref, out in zip(refs, outs):
        r, o = _normalised(ref[0]), _normalised(out[0])
        if len(r) < 2:
            continue
        dr, do = r[1:] - r[:-1], o[1:] - o[:-1]
        num += float(np.abs(do - dr).sum())
        den += float(np.abs(dr).sum())
    return num / den if den > 0 else 0.0


def reference_outputs(net, spec: GraphSpec, feeds: Sequence[dict[str, np.ndarray]],
                      module=None) -> list[list[np.ndarray]]:
    """PyTorch outputs for each feed: compute once, compare many graphs against them."""
    return [torch_outputs(net, spec, f, module) for f in feeds]


def graph_parity(net, spec: GraphSpec, onnx_path: Path, feeds: Sequence[dict[str, np.ndarray]],
                 threads: int = 2, refs: Sequence[Sequence[np.ndarray]] | None = None, module=None,
                 motion_from: int = 0) -> dict:
    """Compare an ONNX graph (ORT, CPU) with the PyTorch module on each feed; aggregate.
    ``refs``: precomputed ``reference_outputs`` for the same feeds. ``module``: the graph's module
    when it is not one of ``net``'s (the memory reader's graphs). ``motion_from``: the backbone's
    ``motion_rel`` reads the calls from this one on (those of consecutive stream frames)."""
    sess = cpu_session(onnx_path, threads)
    names = list(spec.outputs)
    refs = refs if refs is not None else reference_outputs(net, spec, feeds)
    if spec.name == "sampler":
        recalls, feats, kept, alone, states = [], [], [], [], []
        for feed, ref in zip(feeds, refs):
            out = sess.run(names, feed)
            alone.append(out)
            m = sampler_match(ref, out)
            recalls.append(m["topm_recall"])
            feats.append(m["kept_feature_max_abs"])
            kept.append(m["kept"])
            states.append(m.get("state_max_abs_scaled"))
        res = {"topm_recall": float(min(recalls)), "topm_recall_mean": float(np.mean(recalls)),
               "kept_feature_max_abs": float(max(feats)), "calls": len(feeds), "kept_tokens_min": int(min(kept)),
               "compared": "kept (time, patch) sets",
               "streams_batch": streams_batch_match(net, sess, names, list(feeds), alone)}
        if states[0] is not None:
            res["state_max_abs_scaled"] = float(max(states))
            res["compared"] += "; the new sampler_state densely"
        return res
    per_out: dict[str, dict] = {}
    alone = []
    ranked = tied = same_at_tie = unsupported = 0
    for feed, ref in zip(feeds, refs):
        out = sess.run(names, feed)
        alone.append(out)
        decided = None
        if spec.name == "answer" and module is not None:
            decided, supported = answer_decided(module, feed)
            # a near-tie both runtimes resolved alike is compared like any other answer
            same = supported & ~decided & ranked_agree(spec, ref, out)
            decided = decided | same
            ranked, unsupported = ranked + int(supported.sum()), unsupported + int((~supported).sum())
            tied += int((supported & ~decided).sum())
            same_at_tie += int(same.sum())
        for name, d in dense_diff(spec, feed, ref, out, decided).items():
            agg = per_out.setdefault(name, {"max_abs": 0.0, "mean_abs": [], "ref_max_abs": 0.0})
            agg["max_abs"] = max(agg["max_abs"], d["max_abs"])
            agg["mean_abs"].append(d["mean_abs"])
            agg["ref_max_abs"] = max(agg["ref_max_abs"], d["ref_max_abs"])
    for agg in per_out.values():
        agg["mean_abs"] = float(np.mean(agg["mean_abs"]))
        agg["max_abs_scaled"] = agg["max_abs"] / max(1.0, agg["ref_max_abs"])
    res = {"max_abs": max(a["max_abs"] for a in per_out.values()),
           "max_abs_scaled": max(a["max_abs_scaled"] for a in per_out.values()),
           "outputs": per_out, "calls": len(feeds)}
    if spec is HEADS:
        res["compared"] = "outputs where q_mask = 1"
    if spec is BACKBONE:
        res["motion_rel"] = motion_error(refs[motion_from:], alone[motion_from:])
    if spec.name == "answer" and module is not None:
        res["ranked_answers"], res["ranked_at_tie"], res["ranked_unsupported"] = ranked, tied, unsupported
        res["ranked_at_tie_same"] = same_at_tie
        res["compared"] = ("intervals and keyboxes of the ranked answers with support, clear of a near-tie or "
                           "answered alike at one; every other output")
    if spec.name == "reader":  # the runtime reads the memories of many streams in one call
        from export.onnx.reader_graphs import streams_batch_match as reader_batch

        res["streams_batch"] = reader_batch(sess, list(feeds), alone)
    return res


def fp32_failures(parity: dict[str, dict]) -> list[str]:
    """Why an FP32 export does not match PyTorch, one phrase per graph; empty when it does.

    The bound is 1e-4 absolute for outputs of unit scale and 1e-4 relative to the largest output
    beyond that (``FP32_OUTPUT_MAX_ABS`` names the outputs with a bound of their own): a backbone whose
    features reach ~360 (lvm-edge's MobileNetV4) differs from PyTorch by ~5e-4 from float32 summation
    order alone (1.4e-6 relative), which is no export error."""
    bad = []
    for name in (BACKBONE.name, HEADS.name, "reader", "answer", "event_head"):
        p = parity.get(name)
        if not p:
            continue
        # the output that breaks its bound, by name, with its own difference and scale (the graph's
        # overall max difference may come from another output that is within its bound)
        outs = p.get("outputs") or {"": {"max_abs": p["max_abs"], "max_abs_scaled": p.get("max_abs_scaled", p["max_abs"]),
                                         "ref_max_abs": 1.0}}
        over = {o: (d["max_abs_scaled"] / FP32_OUTPUT_MAX_ABS.get(o, FP32_MAX_ABS), d) for o, d in outs.items()
                if d["max_abs_scaled"] > FP32_OUTPUT_MAX_ABS.get(o, FP32_MAX_ABS)}
        if over:
            wname, (_, worst) = max(over.items(), key=lambda kv: kv[1][0])
            bad.append(f"{name}{' output ' + wname if wname else ''} max abs diff "
                       f"{worst['max_abs']:.2e} > {FP32_OUTPUT_MAX_ABS.get(wname, FP32_MAX_ABS):g} x max(1, |output| = "
                       f"{worst.get('ref_max_abs', 1.0):.3g})")
    a = parity.get("answer") or {}
    if a.get("ranked_answers") and a["ranked_at_tie"] > FP32_MAX_TIED * a["ranked_answers"]:
        bad.append(f"answer: {a['ranked_at_tie']} of {a['ranked_answers']} ranked answers with support at a near-tie "
                   f"(more than {FP32_MAX_TIED:.0%}), too many to compare")
    p = parity.get(SAMPLER.name)
    if p and p["topm_recall"] < FP32_MIN_RECALL:
        bad.append(f"sampler top-m recall {p['topm_recall']:.4f} < {FP32_MIN_RECALL}")
    if p and p.get("state_max_abs_scaled", 0.0) > FP32_MAX_ABS:
        bad.append(f"sampler state max abs diff {p['state_max_abs_scaled']:.2e} > {FP32_MAX_ABS:g} (scaled)")
    rb = parity.get("reader", {}).get("streams_batch")
    if rb and rb["max_abs"] > FP32_MAX_ABS:
        bad.append(f"reader rows of one {rb['streams']}-stream call differ from the memories alone "
                   f"(max abs {rb['max_abs']:.2e})")
    sb = (p or {}).get("streams_batch")
    if sb and (sb["topm_recall"] < FP32_MIN_RECALL or sb["kept_feature_max_abs"] > FP32_MAX_ABS):
        bad.append(f"sampler rows of one {sb['streams']}-stream call differ from the streams alone (recall "
                   f"{sb['topm_recall']:.4f}, kept features {sb['kept_feature_max_abs']:.2e})")
    return bad
