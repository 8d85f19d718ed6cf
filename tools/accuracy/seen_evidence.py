"""How well the reader's evidence separates present from absent time and object queries, and what
"not seen" could catch at each rate of present queries wrongly answered "not seen".

    python -m tools.accuracy.seen_evidence --videos 4 --json docs/lab/accuracy/seen_evidence.json

Held-out videos (``evaluation_videos``, seed ``--seed``) are streamed through the checkpoint's sampler;
the reader's facts of each final memory (the memory alone, no timeline) answer the video's time and
object queries and absent ones (``sample_absent_queries``, 75 a video, as ``lvm-eval``). Per query type:
the area under the ROC curve of each candidate evidence (present above absent), and, for the answer
step's own evidence (``current``: the best token's p(activity) x p(event) x p(identity) in the
window), the share of absent queries below the threshold that answers the given share of present
queries "not seen". Candidates: the asked activity's share of the token's activities (``rel``, sigmoid
over the largest; ``soft``, softmax), each with and without p(event), and ``present`` (the product's
best identity match alone).

With ``--bundle B`` the same question is asked of an exported bundle's own answers, through the
runtime (memory and timeline, as ``lvm-eval --bundle B --videos N --queries 300`` asks them, absent
queries one in five): per query type (activity too) the AUC of the answers' calibrated ``p_seen``,
the shares the bundle's own cut gives, and the share of absent queries a cut at each share of present
queries wrongly "not seen" would catch (``PRESENT_WRONG_BUNDLE``: the cut placed on these very answers,
an upper bound for a cut fitted on calibration videos).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRESENT_WRONG = (0.04, 0.08, 0.10, 0.20)
PRESENT_WRONG_BUNDLE = (0.05, 0.075, 0.10, 0.15, 0.20)


def auc(pos, neg) -> float:
    """P(a present query's evidence > an absent one's), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # ties: the mean rank
        k = both == v
        ranks[k] = ranks[k].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def write(out: dict, path: str | None) -> int:
    """Write the report ``out`` to ``path`` (when given) -> the exit status."""
    if path:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
            fh.write("\n")
        print(f"wrote {path}")
    return 0


def bundle_report(bundle: str, videos: int, seed: int, threads: int, video_s: float = 1800.0) -> dict:
    """The ``--bundle`` mode (module docstring) -> its JSON."""
    from edge_runtime.backends.bundle import load_bundle
    from edge_runtime.checkout.absent_queries import is_absent
    from edge_runtime.engine.engine import Engine
    from export.evaluate.scoring import engine_answers, engine_videos

    b = load_bundle(bundle)
    engine = Engine(b, threads=threads, answers="reader")
    rows: list[tuple[str, bool, float, bool]] = []  # type, absent, p_seen, answered "not seen"
    for v in engine_videos(b.cfg, 300, seed, videos=videos, video_s=video_s, absent_share=0.2):
        rows += [(q.type, is_absent(q), float(a["p_seen"]), a.get("status") == "not_seen")
                 for q, a in zip(v.queries, engine_answers(engine, v)) if a.get("p_seen") is not None]
        print(f"video {v.video_id}: {len(v.queries)} queries", flush=True)
    engine.close()
    out = {"tool": "tools/accuracy/seen_evidence.py --bundle", "bundle": bundle, "videos": videos, "seed": seed,
           "video_s": video_s, "queries_per_video": 300, "types": {}}
    for qt in ("activity", "object", "time"):
        pos, neg = ([(p, ns) for t, ab, p, ns in rows if t == qt and ab == absent] for absent in (False, True))
        if not pos or not neg:
            continue
        p_pos, p_neg = np.array([p for p, _ in pos]), np.array([p for p, _ in neg])
        r = out["types"][qt] = {
            "present": len(pos), "absent": len(neg), "auc_p_seen": round(auc(p_pos, p_neg), 3),
            "bundle_cut": {"absent_not_seen": round(float(np.mean([ns for _, ns in neg])), 3),
                           "present_not_seen": round(float(np.mean([ns for _, ns in pos])), 3)},
            "absent_not_seen_at_present_wrong": {f"{w:.3f}": round(float((p_neg < np.quantile(p_pos, w)).mean()), 3)
                                                 for w in PRESENT_WRONG_BUNDLE}}
        print(f"{qt}: {r['present']} present, {r['absent']} absent; AUC of p_seen {r['auc_p_seen']}; the bundle's cut: "
              f"{r['bundle_cut']['absent_not_seen']:.1%} of absent not seen, {r['bundle_cut']['present_not_seen']:.1%} of "
              "present; a cut at " + ", ".join(f"{float(w):.1%} of present -> {v:.1%} of absent"
                                               for w, v in r["absent_not_seen_at_present_wrong"].items()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.seen_evidence", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors")
    ap.add_argument("--reader", default="checkpoints/lvm-tiny-reader.safetensors")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bundle", help="an exported bundle: its own answers' p_seen through the runtime, all three types")
    ap.add_argument("--video-s", type=float, default=1800.0, help="seconds per video with --bundle (default 1800)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.bundle:
        return write(bundle_report(args.bundle, args.videos, args.seed, args.threads, args.video_s), args.json)
    import torch

    from edge_runtime.checkout.absent_queries import is_absent, sample_absent_queries
    from export.dataset.video_data import token_cache_dir
    from export.evaluate.scoring import evaluation_videos
    from export.model.checkpoint import load_checkpoint
    from export.model.reader import load_reader
    from export.train.streaming import stream_memory

    torch.set_num_threads(args.threads)
    net, _ = load_checkpoint(args.checkpoint)
    net.eval()
    reader, answer, _ = load_reader(args.reader, net.cfg)
    videos = evaluation_videos(net, 300, args.seed, videos=args.videos, video_s=1800.0, cache=token_cache_dir())
    rng = np.random.default_rng(args.seed + 104729)  # as tools/accuracy/reader_eval.py
    rows: list[tuple[str, bool, dict[str, float]]] = []
    for v in videos:
        absent = sample_absent_queries(v.annotations, 75, rng, crop_ids=sorted(v.crop_tokens))
        with torch.no_grad():
            mem, svd = stream_memory(net, v, "neural", seed=args.seed)
            basis, sv = (x[None] for x in svd.padded())
            ident, act, event, _, _ = (x[0] for x in reader(*mem, basis, sv))
            t, valid = mem[1][0], mem[3][0]
            p_act, soft, p_ev = torch.sigmoid(act), act.softmax(-1), torch.sigmoid(event)
            rel = p_act / p_act.max(-1, keepdim=True).values
            for q in list(v.queries) + absent:
                if q.type not in ("time", "object"):
                    continue
                a = q.activity_id
                win = ((t >= q.start - 0.5) & (t <= q.end + 0.5)).float() * valid
                if q.type == "time":  # the object query asks for an activity, not a product
                    p_id = torch.sigmoid(answer.match_logits(ident, reader.embed_crop(v.crop_tokens[q.instance_id][None].float())))[0]
                else:
                    p_id = torch.ones_like(t)
                best = lambda x: float((win * p_id * x).max())  # noqa: E731
                rows.append((q.type, is_absent(q), {
                    "current": best(p_act[:, a] * p_ev), "rel": best(rel[:, a] * p_ev), "soft": best(soft[:, a] * p_ev),
                    "rel_no_event": best(rel[:, a]), "soft_no_event": best(soft[:, a]), "present": best(torch.ones_like(t))}))
        print(f"video {v.video_id}: {len(v.queries)} present + {len(absent)} absent queries", flush=True)
    out = {"tool": "tools/accuracy/seen_evidence.py", "checkpoint": args.checkpoint, "reader": args.reader,
           "videos": args.videos, "seed": args.seed, "types": {}}
    for qt in ("time", "object"):
        pos = [f for t, ab, f in rows if t == qt and not ab]
        neg = [f for t, ab, f in rows if t == qt and ab]
        cur_p, cur_n = np.array([f["current"] for f in pos]), np.array([f["current"] for f in neg])
        out["types"][qt] = {
            "present": len(pos), "absent": len(neg),
            "auc": {k: round(auc([f[k] for f in pos], [f[k] for f in neg]), 3) for k in pos[0]},
            "absent_not_seen_at_present_wrong": {f"{w:.2f}": round(float((cur_n < np.quantile(cur_p, w)).mean()), 3)
                                                 for w in PRESENT_WRONG}}
        r = out["types"][qt]
        print(f"{qt}: {r['present']} present, {r['absent']} absent; AUC " + ", ".join(f"{k} {v}" for k, v in r["auc"].items()))
        print("  the answer step's evidence: " + ", ".join(f"{float(w):.0%} of present wrongly not seen -> {v:.0%} of absent"
                                                        for w, v in r["absent_not_seen_at_present_wrong"].items()))
    return write(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
