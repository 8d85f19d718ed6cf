"""P9: per-query answer latency of the query heads vs the memory reader, side by side in one run.

One bundle with the reader pair (lvm-export bundles the checkpoint's ``-reader.safetensors``
companion), two Engines on it: ``answers="heads"`` and ``answers="reader"``. Both ingest the same
generator video, so they hold the same memory. Then the same generator queries (ReST windows,
every type) are asked of both, as one query per call and as batches of 32, heads and reader blocks
alternating. Every query is asked once first, so the object pictures' backbone tokens are cached in
both engines: what is timed is the answer from memory, not the picture's encoding. The reader's
facts are computed at each commit, not per query; their cost per commit is reported beside.
"""
from __future__ import annotations

import json

import numpy as np

from tools.bench.common import SEED_BASE, Ctx, alternate, crops_for, pc, ratio_spread, stats
from tools.repo_paths import shown

P9_SEED = SEED_BASE + 9
BATCHES = (1, 32)


def reader_bundle(ctx: Ctx, model: str = "lvm-tiny"):
    """The bundle P9 measures for ``model``: for lvm-tiny --p9-bundle, else the FP32 bundle of this run
    (the shipped checkpoint and its reader); for the others the FP32 bundle of fresh weights, whose reader
    is fresh too (``fresh_reader_beside``). It must carry the reader pair."""
    from pathlib import Path

    if model == "lvm-tiny" and getattr(ctx, "p9_bundle", None):
        path = Path(ctx.p9_bundle)
        if not (path / "manifest.json").is_file():
            raise RuntimeError(f"--p9-bundle {path}: no manifest.json there")
    else:
        path, info = ctx.bundle(model, "fp32")
        if path is None:
            raise RuntimeError(f"no {model} fp32 bundle: {info.get('lvm_export_error')}")
    answers = json.loads((path / "manifest.json").read_text()).get("answers", {})
    if answers.get("kind") != "reader":
        raise RuntimeError(f"{path}: the bundle has no reader (answers kind {answers.get('kind')!r}); lvm-export "
                           "bundles it from <checkpoint stem>-reader.safetensors beside the checkpoint")
    return path


# lvm-edge's heads take ~0.3 s a query on one thread (2,940 memory tokens): fewer queries and rounds keep
# its part to minutes; lvm-tiny's figures keep their names (P9.<figure>), lvm-edge's are P9.lvm-edge.<figure>
P9_MODELS = {"lvm-tiny": {"n_queries": 320, "rounds": 5, "prefix": "P9."},
             "lvm-edge": {"n_queries": 64, "rounds": 3, "prefix": "P9.lvm-edge."}}


def p9(ctx: Ctx) -> dict:
    models = getattr(ctx, "p9_models", None) or list(P9_MODELS)
    unknown = [m for m in models if m not in P9_MODELS]
    if unknown:
        raise RuntimeError(f"--p9-models: unknown model {unknown[0]!r} (known: {', '.join(P9_MODELS)})")
    per_model = {name: _p9_model(ctx, name, **P9_MODELS[name]) for name in models}
    return {"what": next(iter(per_model.values()))["what"],
            "how": "; ".join(f"{name}: {d['how']}" for name, d in per_model.items()), "models": per_model}


def _p9_model(ctx: Ctx, model: str, *, n_queries: int, rounds: int, prefix: str) -> dict:
    from edge_runtime.checkout import CheckoutVideo, sample_queries
    from edge_runtime.checkout.queries import engine_request
    from edge_runtime.engine.engine import Engine
    from edge_runtime.query.types import BY_NAME

    path = reader_bundle(ctx, model)
    cfg = ctx.cfg(model)
    size, fps = cfg.backbone.image_size, cfg.stream.fps
    video_s = 120.0 if ctx.quick else 1800.0
    n_queries = min(64, n_queries) if ctx.quick else n_queries
    rounds = 2 if ctx.quick else rounds
    times, frames = ctx.frames(P9_SEED, video_s, size, fps)
    video = CheckoutVideo(seed=P9_SEED, duration_s=video_s, size=size)
    queries = sample_queries(video.annotations(), n_queries, np.random.default_rng(P9_SEED))
    crops = crops_for(video, queries, size)
    reqs = [engine_request(q, crops[q.instance_id] if BY_NAME[q.type].takes_object and q.instance_id is not None
                           else None) for q in queries]

    engines, streams, ingest_s, stages = {}, {}, {}, {}
    for kind in ("heads", "reader"):
        eng = Engine(path, backend="onnxruntime", threads=ctx.threads, answers=kind)
        if eng.answers_kind != kind:
            raise RuntimeError(f"Engine(answers={kind!r}) answers with {eng.answers_kind!r}")
        stream = eng.new_stream()
        seen: dict[str, list[float]] = {}
        stream.observe_stages(lambda stage, s, seen=seen: seen.setdefault(stage, []).append(s))
        t0 = pc()
        eng.ingest(stream, frames, times)
        ingest_s[kind] = pc() - t0
        stream.observe_stages(None)
        stages[kind] = {k: stats(v) for k, v in seen.items()}
        engines[kind], streams[kind] = eng, stream
        eng.answer(stream, reqs)  # every picture's tokens cached before anything is timed
    ctx.log(f"  P9 {model}: {len(frames)} frames ingested by each engine (heads {ingest_s['heads']:.1f} s, "
            f"reader {ingest_s['reader']:.1f} s); {len(reqs)} queries")

    per_query: dict[int, dict[str, list[float]]] = {}
    for b in BATCHES:
        calls = [reqs[i:i + b] for i in range(0, len(reqs) - b + 1, b)]

        def block(kind: str, calls=calls, b=b):
            def run(_r: int) -> float:
                eng, stream = engines[kind], streams[kind]
                t = []
                for c in calls:
                    t0 = pc()
                    eng.answer(stream, c)
                    t.append((pc() - t0) / b)
                return t
            return run

        res = alternate({k: block(k) for k in engines}, rounds)
        per_query[b] = {k: [x for r in v for x in r] for k, v in res.items()}
        for kind in engines:
            ctx.fig(f"{prefix}{kind}_ms_per_query_b{b}", value=1e3 * float(np.median(per_query[b][kind])), unit="ms",
                    samples=[1e3 * x for x in per_query[b][kind]],
                    note=f"one call of {b} quer{'y' if b == 1 else 'ies'}, time per query; {len(calls)} calls "
                         f"x {rounds} rounds")
        # per round: the heads' median over the reader's, paired by round
        rh = [float(np.median(r)) for r in res["heads"]]
        rr = [float(np.median(r)) for r in res["reader"]]
        ctx.fig(f"{prefix}heads_over_reader_b{b}", value=float(np.median(per_query[b]["heads"]))
                / float(np.median(per_query[b]["reader"])), unit="x", spread=ratio_spread(rh, rr),
                note="per-query answer time of the heads over the reader's (> 1: the reader is faster)")
    facts = stages["reader"].get("reader")
    if not facts or facts.get("median") is None:
        raise RuntimeError("the reader engine reported no 'reader' stage at its commits")
    ctx.fig(f"{prefix}reader_facts_ms_per_commit", value=1e3 * facts["median"], unit="ms",
            spread={k: (1e3 * v if k != "n" and v is not None else v) for k, v in facts.items()},
            note="the reader graph once per commit (the facts every query then reads)")
    answers = {k: engines[k].answer(streams[k], reqs[:3]) for k in engines}
    for eng in engines.values():
        eng.close()
    return {
        "what": "per-query answer latency from one committed memory: query heads vs memory reader, same bundle",
        "how": f"{len(reqs)} generator queries (seed {P9_SEED}) on a {video_s:g} s video; batches of "
               f"{' and '.join(map(str, BATCHES))}; heads and reader blocks alternate, {rounds} rounds; object "
               "pictures' tokens cached first",
        "model": model, "bundle": shown(path), "video_s": video_s, "queries": len(reqs), "rounds": rounds,
        "ingest_s": {k: round(v, 2) for k, v in ingest_s.items()},
        "commit_stages_s": stages,
        "answered_by": {k: sorted({str(a.get("answered_by")) for a in v}) for k, v in answers.items()},
    }
