"""Evaluate one checkpoint with the neural, random and oracle memories on the same held-out videos.

    python tools/eval_samplers.py --checkpoint runs/tiny/lvm-tiny.safetensors --videos 4 --json out.json

Same videos, queries and scoring as ``lvm-eval`` (which takes one sampler per run); this renders and
encodes the videos once for all three.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="repeatable; label=path allowed")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", default="neural,random,oracle")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import torch

    from export.checkpoint import load_checkpoint
    from export.cli_eval import format_table
    from export.data import token_cache_dir
    from export.evaluate import evaluate_model, heldout_videos

    torch.set_num_threads(os.cpu_count() or 2)
    results = {}
    videos = None
    for spec in args.checkpoint:
        label, _, path = spec.rpartition("=")
        net, _ = load_checkpoint(path)
        if videos is None:  # the backbone is shared by all checkpoints compared here (checked below)
            backbone_state = {k: v.clone() for k, v in net.backbone.state_dict().items()}
            videos = heldout_videos(net, args.videos, args.video_s, args.queries, args.seed, cache=token_cache_dir())
        else:
            same = all(torch.equal(backbone_state[k], v) for k, v in net.backbone.state_dict().items())
            if not same:
                raise SystemExit(f"{path}: its backbone differs from the first checkpoint's; evaluate separately")
        for sampler in args.samplers.split(","):
            t0 = time.time()
            res = evaluate_model(net, videos, sampler, seed=args.seed)
            res["seconds"] = round(time.time() - t0, 1)
            key = f"{label or path}:{sampler}"
            results[key] = res
            print(f"== {key} ({res['queries']} queries, {res['seconds']} s)\n{format_table(res)}", flush=True)
    meta = {"videos": args.videos, "video_s": args.video_s, "queries_per_video": args.queries, "seed": args.seed,
            "looks": [v.video.look for v in videos]}
    with open(args.json, "w") as fh:
        json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
