"""Evaluate one checkpoint with the neural, random and oracle memories on the same held-out videos.

    python -m tools.accuracy.eval_samplers --checkpoint runs/tiny/lvm-tiny.safetensors --videos 4 --json out.json

Same videos, queries and scoring as ``lvm-eval`` (which takes one sampler per run); this renders and
encodes the videos once for all three. ``--samplers ...,prior`` adds the reference that needs no
video at all: activities ranked by their frequency in the checkpoint's own training queries.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.eval_samplers", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="repeatable; label=path allowed")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", default="neural,random,oracle",
                    help="comma list of neural, random, oracle, prior; a name + '-noextent' answers object queries "
                         "with a box at every frame of the window (what heads without an extent output give); '-nosvd' "
                         "zeroes the online-SVD summary the heads read (MeMSVD's contribution)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch CPU threads")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import torch

    from export.model.checkpoint import load_checkpoint
    from export.cli.eval import format_table
    from export.dataset.video_data import token_cache_dir
    from export.evaluate.scoring import evaluate_model, evaluation_videos

    torch.set_num_threads(args.threads)
    results = {}
    videos = None
    for spec in args.checkpoint:
        label, _, path = spec.rpartition("=")
        net, meta = load_checkpoint(path)
        if videos is None:  # the backbone is shared by all checkpoints compared here (checked below)
            backbone_state = {k: v.clone() for k, v in net.backbone.state_dict().items()}
            videos = evaluation_videos(net, args.queries, args.seed, videos=args.videos, video_s=args.video_s,
                                       cache=token_cache_dir())
        else:
            same = all(torch.equal(backbone_state[k], v) for k, v in net.backbone.state_dict().items())
            if not same:
                raise SystemExit(f"{path}: its backbone differs from the first checkpoint's; evaluate separately")
        for sampler in args.samplers.split(","):
            t0 = time.time()
            if sampler == "prior":
                res = prior_ranking(net.cfg, meta, videos)
            else:
                base = sampler.removesuffix("-noextent").removesuffix("-nosvd")
                res = evaluate_model(net, videos, base, seed=args.seed, object_extent=not sampler.endswith("-noextent"),
                                     svd_tokens=not sampler.endswith("-nosvd"))
            res["seconds"] = round(time.time() - t0, 1)
            key = f"{label or path}:{sampler}"
            results[key] = res
            print(f"== {key} ({res['queries']} queries, {res['seconds']} s)\n{format_table(res)}", flush=True)
    info = {"videos": args.videos, "video_s": args.video_s, "queries_per_video": args.queries, "seed": args.seed,
            "looks": [v.video.look for v in videos]}
    with open(args.json, "w") as fh:
        json.dump({"meta": info, "results": results}, fh, indent=2)


def prior_ranking(cfg, meta: dict, videos) -> dict:
    """Activity answers that ignore the video: classes ranked by how often they answer the training
    activity queries of this checkpoint (the queries lvm-train sampled: seeds seed*1000 + i)."""
    import numpy as np

    from edge_runtime.checkout import CheckoutVideo, sample_queries, training_video
    from export.evaluate.scoring import score

    seed = int(meta.get("seed", cfg.train.seed))
    n_videos = int(meta.get("videos", cfg.train.train_videos))
    video_s = float(meta.get("video_s", cfg.train.video_s))
    hits, n = np.zeros(cfg.heads.num_activities), 0
    for i in range(n_videos):
        vseed, look = training_video(seed, i)
        v = CheckoutVideo(seed=vseed, duration_s=video_s, size=cfg.backbone.image_size, look=look)
        for q in sample_queries(v.annotations(), cfg.train.queries_per_video, np.random.default_rng(vseed)):
            if q.type == "activity":
                hits[list(q.gt_activities)] += 1
                n += 1
    freq = (hits / max(n, 1)).tolist()
    queries = [q for v in videos for q in v.queries if q.type == "activity"]
    res = score(queries, [{"type": "activity", "scores": freq} for _ in queries])
    res.update(sampler="prior", queries=len(queries), train_frequency=freq)
    return res


if __name__ == "__main__":
    main()
