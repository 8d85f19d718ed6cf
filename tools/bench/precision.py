"""P6 (FP32 vs FP16 vs INT8 bundles from lvm-export: per-graph CPU latency and accuracy) and P7
(backbone FLOP/s as a fraction of this CPU's measured float32 GEMM peak)."""
from __future__ import annotations

import json

import numpy as np

from edge_runtime.checkout.queries import engine_request
from tools.bench.common import SEED_BASE, Ctx, alternate, crops_for, stats, time_calls

P6_SEED = SEED_BASE + 600
PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("backbone", "sampler", "heads")


def _feeds(ctx: Ctx, eng, n_frames: int = 16, n_queries: int = 16) -> dict[str, dict[str, np.ndarray]]:
    """Representative inputs of the three graphs from a real stream (fp32 engine)."""
    from edge_runtime.query.answers import encode_queries
    from edge_runtime.memory.token_memory import MEMORY_INPUTS

    cfg = eng.cfg
    T, P, d, fps, S = eng.clip_frames, eng.tokens_per_frame, eng.token_dim, cfg.stream.fps, eng.frame_size
    times, frames = ctx.frames(P6_SEED + 99, float(3 * T + n_frames) / fps, S, fps)
    stream = eng.new_stream()
    eng.ingest(stream, frames[: 2 * T], times[: 2 * T])
    clip_tok = eng.encode(frames[2 * T : 3 * T])
    c = stream.committed
    held = stream.memory.read()  # what was committed (a reader engine's commit keeps no copy of the tokens)
    mem = {k: held[k] for k in MEMORY_INPUTS}
    sampler = {**mem, "clip": clip_tok.reshape(1, T * P, d),
               "clip_t": np.repeat(times[2 * T : 3 * T], P)[None].astype(np.float32),
               "clip_p": np.tile(np.arange(P, dtype=np.int64), T)[None]}
    crops = eng.encode(frames[3 * T : 3 * T + 4])
    now = float(c.end)
    types = [("activity", "object", "time")[i % 3] for i in range(n_queries)]
    hb = encode_queries(types, [(max(0.0, now - 300.0), now)] * n_queries,
                        [None if t == "activity" else i % cfg.heads.num_activities for i, t in enumerate(types)],
                        [None if t == "object" else crops[i % len(crops)] for i, t in enumerate(types)],
                        fps=fps, max_queries=cfg.heads.window_queries, tokens_shape=(P, d))
    heads = {**hb.as_feed(), **mem, "svd_basis": c.svd_basis, "svd_sv": c.svd_sv}
    return {"backbone": {"frames": np.ascontiguousarray(frames[3 * T : 3 * T + n_frames])},
            "sampler": sampler, "heads": heads}


def _cast(feed: dict, runner) -> dict:
    meta = runner.get_input_metadata()
    return {k: np.ascontiguousarray(v, meta[k].dtype) for k, v in feed.items()}


def _score(engine, videos) -> tuple[dict, list[dict], list[dict]]:
    from edge_runtime.checkout.metrics import aggregate, score_query

    recs, answers = [], []
    for v in videos:
        stream = engine.new_stream()
        engine.ingest(stream, v["frames"], v["times"])
        engine.flush(stream)
        ans = engine.answer(stream, v["reqs"])
        answers.extend(ans)
        recs.extend(score_query(q, a) for q, a in zip(v["queries"], ans))
    return aggregate(recs), answers, recs


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 1.0


def _agreement(ref: list[dict], got: list[dict], queries) -> dict:
    """How close a precision's answers are to FP32's (independent of training quality)."""
    act, box, tim = [], [], []
    for q, a, b in zip(queries, ref, got):
        if q.type == "activity":
            act.append(float(a["ranked"][0] == b["ranked"][0]))
        elif q.type == "object":
            box.extend(_iou(x, y) for x, y in zip(a["boxes"], b["boxes"]))
        elif a["intervals"] and b["intervals"]:
            (s1, e1), (s2, e2) = a["intervals"][0][:2], b["intervals"][0][:2]
            inter = max(0.0, min(e1, e2) - max(s1, s2))
            union = max(e1, e2) - min(s1, s2)
            tim.append(inter / union if union > 0 else 1.0)
    m = lambda x: round(float(np.mean(x)), 4) if x else None  # noqa: E731
    return {"activity_top1_same": m(act), "object_box_iou": m(box), "time_interval_iou": m(tim)}


def p6(ctx: Ctx) -> dict:
    from edge_runtime.checkout import CheckoutVideo, sample_queries

    cfg = ctx.cfg("lvm-tiny")
    S, fps = cfg.backbone.image_size, cfg.stream.fps
    bundles = {p: ctx.bundle("lvm-tiny", p) for p in PRECISIONS}
    detail: dict = {"bundles": {p: i for p, (_, i) in bundles.items()}}
    have = [p for p in PRECISIONS if bundles[p][0] is not None]
    if "fp32" not in have:
        raise RuntimeError("no fp32 bundle")
    for p in PRECISIONS:
        if p not in have:
            ctx.fig(f"P6.backbone.{p}_speedup", value="not available", unit="x",
                    note=bundles[p][1].get("lvm_export_error", "lvm-export failed"))
    engines = {p: ctx.engine("lvm-tiny", p) for p in have}
    for p in have:
        man = json.loads((bundles[p][0] / "manifest.json").read_text())
        detail.setdefault("quantization", {})[p] = {g: man["graphs"][g].get("quantization") for g in GRAPHS}
        detail.setdefault("export_latency_ms", {})[p] = man.get("latency")
    feeds = _feeds(ctx, engines["fp32"])
    feeds = {p: {g: _cast(feeds[g], getattr(engines[p], g)) for g in GRAPHS} for p in have}
    calls = 2 if ctx.quick else 6
    rounds = 2 if ctx.quick else 7
    for p in have:  # warm-up
        for g in GRAPHS:
            getattr(engines[p], g).infer(feeds[p][g])

    def block(p):
        def run(_r):
            return {g: float(np.median(time_calls(lambda: getattr(engines[p], g).infer(feeds[p][g]), calls))) * 1e3
                    for g in GRAPHS}
        return run

    res = alternate({p: block(p) for p in have}, rounds)
    lat = {p: {g: stats([b[g] for b in res[p]]) for g in GRAPHS} for p in have}
    detail["latency_ms"] = lat
    detail["latency_inputs"] = {"backbone": "16 frames", "sampler": "one clip into a full memory",
                                "heads": "16 queries (mixed types, 300 s windows)"}
    for p in have:
        if p == "fp32":
            continue
        for g in GRAPHS:
            r32 = [b[g] for b in res["fp32"]]
            rp = [b[g] for b in res[p]]
            goal = (">=", 1.8) if (g == "backbone" and p == "int8") else None
            ctx.fig(f"P6.{g}.{p}_speedup", value=float(np.median(r32) / np.median(rp)), unit="x vs fp32",
                    spread=stats([a / b for a, b in zip(r32, rp)]), goal=goal,
                    note=f"ONNX Runtime CPU, {ctx.threads} threads; {detail['latency_inputs'][g]}"
                         + (f"; int8 mode: {(detail['quantization'][p][g] or {}).get('mode')}" if p == "int8" else ""))

    # accuracy: same held-out videos and queries through each bundle
    n_vid, dur, nq = (1, 96.0, 15) if ctx.quick else (2, 900.0, 90)
    videos = []
    for i in range(n_vid):
        seed = P6_SEED + i
        v = CheckoutVideo(seed=seed, duration_s=dur, size=S)
        times, frames = ctx.frames(seed, dur, S, fps)
        qs = sample_queries(v.annotations(), nq, np.random.default_rng(seed))
        crops = crops_for(v, qs, S)
        videos.append({"frames": frames, "times": times, "queries": qs,
                       "reqs": [engine_request(q, crops.get(q.instance_id)) for q in qs]})
    all_q = [q for v in videos for q in v["queries"]]
    scores, answers, recs = {}, {}, {}
    for p in have:
        scores[p], answers[p], recs[p] = _score(engines[p], videos)

    def pooled(rs):  # R@1x per type over all its queries (windows pooled)
        out = {}
        for t in ("activity", "object", "time"):
            v = [r["recall@1x"] for r in rs if r["type"] == t and r.get("recall@1x") is not None]
            out[t] = float(np.mean(v)) if v else None
        return out
    ctx.drop_frames()
    for e in engines.values():
        e.close()
    ref = scores["fp32"]["recall@1x"]
    detail["accuracy"] = {"videos": n_vid, "video_s": dur, "queries": len(all_q),
                          "recall@1x": {p: scores[p]["recall@1x"] for p in have},
                          "count": scores["fp32"]["count"], "deltas_points": {}, "agreement_with_fp32": {}}
    weights = ctx.checkpoint("lvm-tiny")[1]["weights"]
    for p in have:
        if p == "fp32":
            continue
        deltas = {t: {w: (None if ref[t][w] is None or scores[p]["recall@1x"][t][w] is None
                          else round(100 * (scores[p]["recall@1x"][t][w] - ref[t][w]), 2)) for w in ref[t]}
                  for t in ref}
        flat = [abs(x) for ws in deltas.values() for x in ws.values() if x is not None]
        worst = max(flat) if flat else None
        detail["accuracy"]["deltas_points"][p] = deltas
        agree = _agreement(answers["fp32"], answers[p], all_q)
        detail["accuracy"]["agreement_with_fp32"][p] = agree
        p32, pp = pooled(recs["fp32"]), pooled(recs[p])
        detail["accuracy"].setdefault("pooled_deltas_points", {})[p] = {
            t: (None if p32[t] is None or pp[t] is None else round(100 * (pp[t] - p32[t]), 2)) for t in p32}
        ctx.fig(f"P6.{p}_accuracy_delta_points", value=worst, unit="R@1x points (max |delta|)",
                goal=("<=", 1.0) if p == "int8" else None,
                note=f"largest |R@1x {p} - fp32| over query type x window cells, {len(all_q)} queries on {n_vid} "
                     f"held-out video(s) of {dur:g} s (one flipped query moves a cell by 100/n points); per type, "
                     f"windows pooled: {detail['accuracy']['pooled_deltas_points'][p]}; weights: {weights}; "
                     f"answers vs fp32: {agree}")
    return detail


# ----------------------------------------------------------------------------------------------
# P7

def p7(ctx: Ctx) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(ctx.threads)
    cfg = ctx.cfg("lvm-tiny")
    S = cfg.backbone.image_size
    B = 16
    net = ctx.load_net("lvm-tiny")
    frames = np.random.default_rng(0).integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    x = torch.from_numpy(frames)
    with torch.inference_mode():
        fc = FlopCounterMode(display=False)
        with fc:
            net.backbone(x)
    flops = float(fc.get_total_flops())
    by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get("Global", {}).items()}
    eng = ctx.engine("lvm-tiny")
    feed = {"frames": frames}
    eng.backbone.infer(feed)
    N = 2048
    a32 = np.random.default_rng(1).standard_normal((N, N)).astype(np.float32)
    ta = torch.from_numpy(a32)
    calls = 3 if ctx.quick else 10
    rounds = 2 if ctx.quick else 6

    # best of `calls` per round for every block alike (the least-disturbed call: peak and backbone
    # are both "what this CPU can do" figures)
    def gemm_np(_r):
        return 2 * N**3 / min(time_calls(lambda: a32 @ a32, calls))

    def gemm_torch(_r):
        with torch.inference_mode():
            return 2 * N**3 / min(time_calls(lambda: ta @ ta, calls))

    def gemm_torch_1t_scaled(_r):  # one thread x threads: the ideal-scaling peak (robust to thread contention)
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return 2 * N**3 / min(time_calls(lambda: ta @ ta, calls)) * ctx.threads
        finally:
            torch.set_num_threads(ctx.threads)

    def bb_ort(_r):
        return flops / min(time_calls(lambda: eng.backbone.infer(feed), calls))

    def bb_torch(_r):
        with torch.inference_mode():
            return flops / min(time_calls(lambda: net.backbone(x), calls))

    gemm_np(0), gemm_torch(0), bb_torch(0)
    res = alternate({"gemm_numpy": gemm_np, "gemm_torch": gemm_torch, "gemm_torch_1thread_x_threads": gemm_torch_1t_scaled,
                     "backbone_ort": bb_ort, "backbone_torch": bb_torch}, rounds)
    eng.close()
    peak_r = [max(a, b, c) for a, b, c in zip(res["gemm_numpy"], res["gemm_torch"], res["gemm_torch_1thread_x_threads"])]
    peak = float(np.median(peak_r))
    frac = [b / p for b, p in zip(res["backbone_ort"], peak_r)]
    frac_t = [b / p for b, p in zip(res["backbone_torch"], peak_r)]
    g = lambda v: [x / 1e9 for x in v]  # noqa: E731
    ctx.fig("P7.backbone_fraction_of_peak", value=float(np.median(frac)), unit="fraction", samples=frac,
            goal=(">=", 0.5),
            note=f"ONNX Runtime backbone ({cfg.backbone.name}, {S} px, batch {B}) FLOP/s over the best float32 "
                 f"{N}x{N} GEMM per round (the best of numpy and torch at {ctx.threads} threads and torch at 1 thread "
                 f"x {ctx.threads}); FLOPs counted on the PyTorch module, so an ONNX Runtime kernel doing fewer "
                 "multiplies (e.g. Winograd) can exceed 1")
    ctx.fig("P7.backbone_torch_fraction_of_peak", value=float(np.median(frac_t)), unit="fraction", samples=frac_t)
    ctx.fig("P7.gemm_peak_gflops", value=peak / 1e9, unit="GFLOP/s", samples=g(peak_r))
    ctx.fig("P7.backbone_ort_gflops", value=float(np.median(res["backbone_ort"])) / 1e9, unit="GFLOP/s",
            samples=g(res["backbone_ort"]))
    return {"backbone_flops_per_frame": flops / B, "flops_counted_by": "torch.utils.flop_counter.FlopCounterMode "
            "(2 FLOPs per multiply-add; conv and matmul only)", "flops_by_op": by_op, "batch": B,
            "timing": f"best of {calls} calls per round for the GEMM and the backbone alike; {rounds} rounds",
            "gemm": f"{N}x{N} float32", "gflops": {k: stats(g(v)) for k, v in res.items()}}
