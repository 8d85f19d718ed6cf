"""The memory reader + answer step beside the shipped query heads, on the same held-out memories.

    python -m tools.accuracy.reader_eval --reader checkpoints/lvm-tiny-reader.safetensors --videos 4 --json out.json

Each held-out generator video (``heldout_video``: seeds training never used, even i in looks it never
saw) is streamed once through the checkpoint's frozen sampler; the heads and the reader then answer
the same ReST queries from that one final memory, scored with ``edge_runtime.checkout.metrics`` (macro
over queries per type x window). ``prior`` is the no-video ranking (the heads' training class frequency).

Absent queries (``edge_runtime.checkout.absent_queries``: a product never visible in the window, an
activity that never happens in it; ``--absent-share`` of all queries) measure "not seen": the share of
them the reader answers not_seen, the share of present queries it wrongly answers not_seen, and the
precision of the answers it marks confident. The heads have no way to say "not seen".

Latency: per query, one answer-step call with a single query (facts already committed), against one
heads call with a single query row; the reader's commit cost (facts from the memory) is separate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from edge_runtime.query.types import BY_NAME, NAMES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIDENT = 0.8


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.reader_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors")
    ap.add_argument("--reader", required=True)
    ap.add_argument("--videos", type=int, default=4, help="held-out videos (heldout_video 0..n-1)")
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120, help="present queries per video")
    ap.add_argument("--absent-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-queries", type=int, default=30, help="single-query timings per video and model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-onnx", action="store_true", help="skip timing the exported graphs in ONNX Runtime")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import numpy as np
    import torch

    from edge_runtime.checkout.absent_queries import is_absent, sample_absent_queries
    from edge_runtime.checkout.metrics import aggregate, score_query
    from edge_runtime.query.answers import decode_answers
    from edge_runtime.query.reader_answers import confidence, p_seen as seen_probability
    from export.dataset.video_data import token_cache_dir
    from export.evaluate.scoring import (
        evaluation_videos,
        head_batch,
        run_heads,
        score,
    )
    from export.model.checkpoint import load_checkpoint
    from export.model.reader import load_reader
    from export.train.query_batch import build_query_batch
    from export.train.reader_calibration import is_hit, run_answer_step
    from export.train.streaming import stream_memory
    from tools.accuracy.eval_samplers import prior_ranking

    torch.set_num_threads(args.threads)
    net, meta = load_checkpoint(args.checkpoint)
    net.eval()
    cfg = net.cfg
    reader, answer, rmeta = load_reader(args.reader, cfg)
    cal = rmeta["calibration"]
    t0 = time.time()
    videos = evaluation_videos(net, args.queries, args.seed, videos=args.videos, video_s=args.video_s,
                               cache=token_cache_dir(), progress=True)
    print(f"{len(videos)} held-out videos ready in {time.time() - t0:.0f} s (looks {[v.video.look for v in videos]})",
          flush=True)
    prior = prior_ranking(cfg, meta, videos)
    present, heads_ans, reader_ans, all_q, all_ans, all_ev, all_iv, ident_hits = [], [], [], [], [], [], [], []
    lat = {"heads_ms": [], "answer_ms": [], "commit_ms": [], "answer_ort_ms": [], "commit_ort_ms": []}
    ort_graphs = None if args.no_onnx else export_graphs(reader, answer, cfg)
    rng = np.random.default_rng(args.seed + 104729)
    for v in videos:
        n_abs = int(round(len(v.queries) * args.absent_share / (1 - args.absent_share)))
        absent = sample_absent_queries(v.annotations, n_abs, rng, crop_ids=sorted(v.crop_tokens))
        with torch.no_grad():
            mem, svd = stream_memory(net, v, "neural", seed=args.seed)
            basis, sv = (x[None] for x in svd.padded())
            for i in range(0, len(v.queries), 64):
                qs = v.queries[i: i + 64]
                qb = build_query_batch(qs, [v.crop_tokens] * len(qs), cfg)
                heads_ans.extend(decode_answers(head_batch(qb), run_heads(net, mem, svd, qb),
                                                object_fps=cfg.stream.object_fps))
            qs = list(v.queries) + absent
            ans, ev, iv, commit_s, _ = run_answer_step(reader, answer, mem, basis, sv, qs, v.crop_tokens, cfg=cfg,
                                                       prior=rmeta["prior"], prior_weight=cal.get("prior_weight", 1e-4),
                                                       prior_weight_by_window=cal.get("prior_weight_by_window"))
            lat["commit_ms"].append(1e3 * commit_s)
            ident_hits.extend(identity_top1(reader, mem, basis, sv, v, cfg))
            # single-query timings: the facts are computed once (commit), then each query alone
            facts = [x[0] for x in reader(*mem, basis, sv)]
            for q in v.queries[: args.latency_queries]:
                qb = build_query_batch([q], [v.crop_tokens], cfg)
                t1 = time.perf_counter()
                run_heads(net, mem, svd, qb)
                lat["heads_ms"].append(1e3 * (time.perf_counter() - t1))
                obj = v.crop_tokens[q.instance_id][None].float() if q.type != "object" else torch.zeros(1, *v.crop_tokens[next(iter(v.crop_tokens))].shape)
                t1 = time.perf_counter()
                emb = reader.embed_crop(obj)
                answer(*facts, mem[1][0], mem[3][0], torch.tensor([BY_NAME[q.type].id]),
                       torch.tensor([q.activity_id or 0]), emb, torch.tensor([[q.start, q.end]]))
                lat["answer_ms"].append(1e3 * (time.perf_counter() - t1))
                if ort_graphs is not None:
                    feed = {"ident": facts[0], "act_logits": facts[1], "event_logit": facts[2], "boxes": facts[3], "span": facts[4],
                            "mem_t": mem[1][0], "mem_valid": mem[3][0],
                            "q_type": torch.tensor([BY_NAME[q.type].id]),
                            "q_activity": torch.tensor([q.activity_id or 0]), "q_object": obj,
                            "q_window": torch.tensor([[q.start, q.end]])}
                    lat["answer_ort_ms"].append(ort_ms(ort_graphs[1], feed))
            if ort_graphs is not None:
                lat["commit_ort_ms"].append(ort_ms(ort_graphs[0], dict(zip(
                    ("mem", "mem_t", "mem_p", "mem_valid", "svd_basis", "svd_sv"), (*mem, basis, sv)))))
        present.extend(v.queries)
        reader_ans.extend(ans[: len(v.queries)])
        all_q.extend(qs)
        all_ans.extend(ans)
        all_ev.extend(ev.tolist())
        all_iv.extend(iv)
        print(f"video {v.video_id}: {len(v.queries)} present + {len(absent)} absent queries", flush=True)

    res = {"prior": prior, "heads": score(present, heads_ans), "reader": score(present, reader_ans)}
    # "not seen" and confidence, from the calibration fitted on training looks
    ev = np.asarray(all_ev)
    types = np.array([q.type for q in all_q])
    absent_m = np.array([is_absent(q) for q in all_q])
    p_seen = np.zeros(len(ev))
    conf = np.zeros(len(ev))
    iv = np.asarray(all_iv)
    for t in NAMES:
        k = types == t
        idx = np.flatnonzero(k)
        p_seen[k] = seen_probability(ev[k], cal[t], [all_q[i].activity_id for i in idx])
        scores = [all_ans[i]["scores"] for i in idx] if t == "activity" and len(idx) else None
        conf[k] = confidence(ev[k], iv[k], cal[t], scores=scores,
                             window_s=[all_q[i].end - all_q[i].start for i in idx])
    not_seen = p_seen < 0.5
    hit = np.array([is_hit(q, a) for q, a in zip(all_q, all_ans)])
    # counted as a miss when the reader says not_seen to a present query
    recs = []
    for q, a, ns in zip(present, reader_ans, not_seen[~absent_m]):
        r = score_query(q, a)
        recs.append({**r, **{k: 0.0 for k in ("recall@1x", "recall@3x") if ns and r[k] is not None}})
    res["reader (not_seen = miss)"] = aggregate(recs)
    answered = ~not_seen
    confident = answered & (conf >= CONFIDENT)
    ns = {}
    for t in ("activity", "object", "time", "all"):
        k = np.ones(len(ev), bool) if t == "all" else types == t
        a, p = k & absent_m, k & ~absent_m
        ns[t] = {"absent": int(a.sum()), "absent_not_seen": float(not_seen[a].mean()) if a.any() else None,
                 "present": int(p.sum()), "present_not_seen": float(not_seen[p].mean()) if p.any() else None,
                 "confident": int((confident & k).sum()),
                 "confident_precision": float(hit[confident & k].mean()) if (confident & k).any() else None,
                 "ece": ece(conf[answered & k], hit[answered & k])}
    res["not_seen"] = ns
    res["identity_top1"] = {"tokens": len(ident_hits), "right_class": float(np.mean(ident_hits)) if ident_hits else None}
    pct = lambda xs, q: float(np.percentile(xs, q)) if xs else None  # noqa: E731
    res["latency_ms"] = {k: {"p50": pct(v, 50), "p99": pct(v, 99), "n": len(v)} for k, v in lat.items()}
    print_tables(res)
    with open(args.json, "w") as fh:
        json.dump({"meta": {"command": "python -m tools.accuracy.reader_eval " + " ".join(sys.argv[1:]),
                            "git_commit": git_commit(), "checkpoint": args.checkpoint, "reader": args.reader, "videos": args.videos,
                            "video_s": args.video_s, "queries": args.queries, "absent_share": args.absent_share,
                            "seed": args.seed, "looks": [v.video.look for v in videos], "threads": args.threads,
                            "reader_train": rmeta.get("train")}, "results": res}, fh, indent=2)


def identity_top1(reader, mem, basis, sv, v, cfg) -> list[bool]:
    """Per memory token that shows a product: is the video's crop its identity matches best one of
    that product's class (what activity and time queries and "not seen" rest on)."""
    import numpy as np
    import torch

    from export.train.token_targets import token_fact_targets

    inst, _, _, _ = token_fact_targets(v.annotations, v.times, cfg.backbone.grid)
    t, p = mem[1][0].numpy(), mem[2][0].numpy()
    frame = np.clip(np.searchsorted(v.times, t - 0.5 / cfg.stream.fps), 0, len(v.times) - 1)
    tok = inst[frame, p]
    cls_of = {int(i["instance_id"]): int(i.get("class_id", i["instance_id"])) for i in v.annotations["instances"]}
    ids = sorted(v.crop_tokens)
    with torch.no_grad():
        ident = reader(*mem, basis, sv)[0][0]
        emb = reader.embed_crop(torch.stack([v.crop_tokens[i].float() for i in ids]))
    best = (ident @ emb.T).argmax(1).numpy()
    keep = (tok >= 0) & (mem[3][0].numpy() > 0)
    return [cls_of.get(ids[b], -1) == cls_of.get(int(i), -2) for b, i in zip(best[keep], tok[keep])]


def git_commit() -> str | None:
    """The checkout's commit (with "+changes" when the work tree differs), None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def export_graphs(reader, answer, cfg):
    """The reader (commit) and the answer step (+ the crop embedding) as ONNX Runtime sessions, one thread."""
    import tempfile

    import onnxruntime as ort
    import torch

    from export.onnx.reader_graphs import AnswerGraph

    m, d, P = cfg.stream.memory_tokens, cfg.backbone.dim, cfg.backbone.tokens_per_frame
    mem = (torch.randn(1, m, d), torch.sort(torch.rand(1, m) * 1800).values, torch.randint(0, P, (1, m)),
           torch.ones(1, m), torch.randn(1, cfg.svd.n_components, d), torch.rand(1, cfg.svd.n_components))
    tmp = tempfile.mkdtemp(prefix="reader-onnx-")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    with torch.no_grad():
        facts = [x[0] for x in reader(*mem)]
        torch.onnx.export(reader, mem, f"{tmp}/reader.onnx", opset_version=18, dynamo=False,
                          input_names=["mem", "mem_t", "mem_p", "mem_valid", "svd_basis", "svd_sv"],
                          output_names=["ident", "act_logits", "event_logit", "boxes", "span"])
        qin = (torch.tensor([2]), torch.tensor([1]), torch.randn(1, P, d), torch.tensor([[100.0, 400.0]]))
        names = ["ident", "act_logits", "event_logit", "boxes", "span", "mem_t", "mem_valid", "q_type", "q_activity",
                 "q_object", "q_window"]
        outs = ["activity_scores", "intervals", "keyboxes", "evidence"]
        # eval mode: the exporter restores the wrapper's mode afterwards, and a new Module is in training
        # mode, which would switch the shared reader's dropout on
        torch.onnx.export(AnswerGraph(reader, answer).eval(), (*facts, mem[1][0], mem[3][0], *qin), f"{tmp}/answer.onnx", opset_version=18,
                          dynamo=False, input_names=names, output_names=outs,
                          dynamic_axes={k: {0: "Q"} for k in names[7:] + outs})
    return tuple(ort.InferenceSession(f"{tmp}/{n}.onnx", so, providers=["CPUExecutionProvider"])
                 for n in ("reader", "answer"))


def ort_ms(sess, feed: dict, repeat: int = 3) -> float:
    """Best of ``repeat`` runs (ms): the graph's cost, not the shared machine's hiccups."""
    names = {i.name for i in sess.get_inputs()}
    f = {k: v.detach().numpy() for k, v in feed.items() if k in names}
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, f)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def ece(conf, hit, bins: int = 10):
    import numpy as np

    if len(conf) == 0:
        return None
    idx = np.minimum((np.asarray(conf) * bins).astype(int), bins - 1)
    return float(sum(abs(conf[idx == b].mean() - hit[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def print_tables(res: dict) -> None:
    rows = [k for k in ("prior", "heads", "reader", "reader (not_seen = miss)") if k in res]
    f = lambda x: "   n/a" if x is None else f"{100 * x:6.1f}"  # noqa: E731
    for r in ("recall@1x", "recall@3x"):
        print(f"\n{r}: " + " | ".join(rows))
        for t in NAMES:
            for w in ("short", "medium", "long"):
                cells = [f(res[k][r][t][w]) for k in rows]
                n = res["heads"]["count"][t][w]
                print(f"{t:9s} {w:7s} n={n:3d} " + " ".join(cells))
    print("\nnot seen (calibrated p(seen) < 0.5); confident = p(right) >= %.1f" % CONFIDENT)
    for t, d in res["not_seen"].items():
        print(f"{t:9s} absent {d['absent']:3d} -> not_seen {f(d['absent_not_seen'])} %   present {d['present']:3d} -> "
              f"wrongly not_seen {f(d['present_not_seen'])} %   confident {d['confident']:3d}, precision "
              f"{f(d['confident_precision'])} %   ECE {f(d['ece'])}")
    it = res["identity_top1"]
    print(f"identity: the best-matching crop is of the token's class for {f(it['right_class'])} % of "
          f"{it['tokens']} memory tokens that show a product")
    lt = res["latency_ms"]
    print(f"\nper query: heads p50 {lt['heads_ms']['p50']:.2f} ms p99 {lt['heads_ms']['p99']:.2f} ms; answer step "
          f"p50 {lt['answer_ms']['p50']:.3f} ms p99 {lt['answer_ms']['p99']:.3f} ms; reader commit "
          f"p50 {lt['commit_ms']['p50']:.1f} ms")
    if lt["answer_ort_ms"]["n"]:
        print(f"ONNX Runtime, 1 thread: answer step p50 {lt['answer_ort_ms']['p50']:.3f} ms p99 "
              f"{lt['answer_ort_ms']['p99']:.3f} ms; reader commit p50 {lt['commit_ort_ms']['p50']:.1f} ms")


if __name__ == "__main__":
    main()
