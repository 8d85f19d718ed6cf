"""What a checkpoint's sampler keeps, and the best activity answers any reader of that memory could give.

    python -m tools.accuracy.memory_ceiling --checkpoint checkpoints/lvm-tiny.safetensors --videos 4 --json out.json

On the held-out videos of tools/accuracy/eval_samplers.py, streams each video once with the neural sampler
and once with random tokens, and measures at the end of the stream:
- the share of memory tokens that show an event's object (export/train/token_targets.py labels);
- the share of events with at least one such token in memory;
- the activity R@1x of an oracle reader: for each activity query it knows which memory tokens show
  the queried instance during which activity, ranks those activities first and the rest by the
  training-query frequency (the "prior" row). No heads can beat this with that memory; the gap
  between it and the heads is the heads' to close, the gap between the two memories the sampler's.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.memory_ceiling", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import numpy as np
    import torch
    from tools.accuracy.eval_samplers import prior_ranking

    from export.model.checkpoint import load_checkpoint
    from export.dataset.video_data import token_cache_dir
    from export.evaluate.scoring import evaluation_videos

    torch.set_num_threads(args.threads)
    net, meta = load_checkpoint(args.checkpoint)
    cfg = net.cfg
    videos = evaluation_videos(net, args.queries, args.seed, videos=args.videos, video_s=args.video_s,
                               cache=token_cache_dir())
    prior = np.asarray(prior_ranking(cfg, meta, videos)["train_frequency"])
    out = {}
    for sampler in ("neural", "random"):
        out[sampler] = memory_figures(net, videos, sampler, prior, seed=args.seed)
        ceil = " / ".join(f"{100 * x:.1f}" for x in out[sampler]["oracle_reader_activity_recall@1x"].values())
        print(f"{sampler:7s} event tokens {100 * out[sampler]['event_token_share']:.1f} % of memory, "
              f"events covered {100 * out[sampler]['events_covered']:.1f} %, oracle-reader activity R@1x "
              f"(short / medium / long) {ceil}", flush=True)
    with open(args.json, "w") as fh:
        json.dump({"checkpoint": args.checkpoint, "videos": args.videos, "looks": [v.video.look for v in videos],
                   **out}, fh, indent=2)


def memory_figures(net, videos, sampler: str, prior, seed: int = 0) -> dict:
    """What ``sampler``'s memory holds at the end of each video's stream: the share of its tokens that
    show an event's object, the share of events with such a token, and the oracle reader's activity R@1x."""
    import numpy as np

    from export.evaluate.scoring import score
    from export.train.streaming import stream_memory
    from export.train.token_targets import event_token_labels

    cfg = net.cfg
    queries, answers, n_event_tok, n_tok, n_ev, n_ev_cov = [], [], 0, 0, 0, 0
    for v in videos:
        mem, _ = stream_memory(net, v, sampler, seed=seed)
        keep = mem[3][0] > 0
        t, p = mem[1][0][keep].numpy(), mem[2][0][keep].numpy()
        inst_map, act_map = event_token_labels(v.annotations, v.times, cfg.backbone.grid)
        frame = np.clip(np.round(t * cfg.stream.fps).astype(int), 0, len(v.times) - 1)
        inst, act = inst_map[frame, p], act_map[frame, p]
        n_event_tok += int((inst >= 0).sum())
        n_tok += len(t)
        for e in v.annotations["events"]:
            n_ev += 1
            n_ev_cov += bool(((inst == e["instance_id"]) & (act == e["activity_id"])
                              & (t >= e["start"]) & (t < e["end"])).any())
        for q in v.queries:
            if q.type != "activity":
                continue
            seen = set(act[(inst == q.instance_id) & (t >= q.start) & (t <= q.end)].tolist())
            queries.append(q)
            answers.append({"type": "activity", "scores": [prior[a] + (1.0 if a in seen else 0.0)
                                                            for a in range(len(prior))]})
    r = score(queries, answers)
    return {"event_token_share": n_event_tok / max(n_tok, 1), "events_covered": n_ev_cov / max(n_ev, 1),
            "oracle_reader_activity_recall@1x": r["recall@1x"]["activity"], "queries": len(queries)}


if __name__ == "__main__":
    main()
