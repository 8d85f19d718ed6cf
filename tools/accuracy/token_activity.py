"""How well a memory reader names the activity under each memory token, on three kinds of video.

    python -m tools.accuracy.token_activity --reader checkpoints/lvm-tiny-reader.safetensors --json out.json

Every memory the frozen sampler keeps (after every second clip, as the reader stage keeps them) is
read once; each valid token whose patch shows an object during one of its events
(``export/train/token_targets.token_fact_targets``) counts as right when the reader's top activity
is that event's. Three sets of ``--videos`` videos each:

- ``train``: the reader's first training videos (``training_video(seed, i)``, i < videos);
- ``unseen``: training-look videos no stage trained on (after the reader's training and calibration
  videos, as its metadata records them);
- ``held_out``: lvm-eval's held-out videos (``heldout_video(seed, i)``; even i in looks training never
  saw), one row per video too, so a look and a video can be told apart.

Also the area under the ROC curve of the "event here" logit (event tokens against the others).
What it separates: a gap between ``train`` and ``unseen`` is the reader's own overfitting, a gap
between ``unseen`` and ``held_out`` what differs in the held-out videos.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def read_video(reader, v) -> tuple:
    """(activity target, activity logits, event logit) of every valid token of every memory of ``v``."""
    import numpy as np
    import torch

    acts, logits, events = [], [], []
    with torch.no_grad():
        for s in range(len(v.snap_end)):
            mem = (v.tokens[s : s + 1].float(), v.times[s : s + 1], v.patches[s : s + 1], v.valid[s : s + 1],
                   v.basis[s : s + 1], v.sv[s : s + 1])
            _, act_l, ev_l, _, _ = reader(*mem)
            ok = v.valid[s] > 0
            acts.append(v.act[s][ok].numpy())
            logits.append(act_l[0][ok].numpy())
            events.append(ev_l[0][ok].numpy())
    return np.concatenate(acts), np.concatenate(logits), np.concatenate(events)


def score(read: list[tuple]) -> dict:
    """Top-1 activity on event tokens (overall and per activity id) and the event logit's ROC AUC, over
    ``read_video``'s outputs of one or more videos."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    a, lg, ev = (np.concatenate(x) for x in zip(*read))
    on = a >= 0
    right = lg[on].argmax(1) == a[on]
    per = {int(c): {"tokens": int((a[on] == c).sum()), "top1": round(float(right[a[on] == c].mean()), 4)}
           for c in np.unique(a[on])}
    auc = float(roc_auc_score(on, ev)) if 0 < on.sum() < len(on) else None
    return {"tokens": int(len(a)), "event_tokens": int(on.sum()), "top1": round(float(right.mean()), 4) if on.any() else None,
            "event_auc": None if auc is None else round(auc, 4), "per_activity": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.token_activity", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/lvm-tiny.safetensors")
    ap.add_argument("--reader", default="checkpoints/lvm-tiny-reader.safetensors")
    ap.add_argument("--videos", type=int, default=4, help="videos per set (default 4)")
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--seed", type=int, default=0, help="lvm-eval's seed for the held-out set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    if args.videos < 1 or not args.video_s > 0:
        ap.exit(2, f"{ap.prog}: --videos must be at least 1 and --video-s above 0\n")
    import torch

    from edge_runtime.checkout import heldout_video, training_video
    from export.dataset.video_data import token_cache_dir
    from export.model.checkpoint import CheckpointError, load_checkpoint
    from export.model.reader import load_reader
    from export.train.reader_videos import make_videos

    torch.set_num_threads(args.threads)
    try:
        net, _ = load_checkpoint(args.checkpoint)
        reader, _, meta = load_reader(args.reader, net.cfg)
    except (CheckpointError, ValueError, OSError) as err:
        ap.exit(2, f"{ap.prog}: {err}\n")
    net.eval()
    tr = meta.get("train") or {}
    if "videos" not in tr:
        ap.exit(2, f"{ap.prog}: {args.reader} does not say which videos trained it (trained on a dataset folder?)\n")
    seed, first_unseen = int(tr.get("seed", 0)), int(tr["videos"]) + int(tr.get("calib_videos", 0))
    sets = {"train": [training_video(seed, i) for i in range(args.videos)],
            "unseen": [training_video(seed, first_unseen + i) for i in range(args.videos)],
            "held_out": [heldout_video(args.seed, i) for i in range(args.videos)]}
    res = {"tool": "tools/accuracy/token_activity.py", "checkpoint": args.checkpoint, "reader": args.reader,
           "labels": net.cfg.heads.num_activities, "video_s": args.video_s, "sets": {}}
    for name, specs in sets.items():
        read = [read_video(reader, v) for v in make_videos(net, specs, args.video_s, 1, 2, 0.0, name,
                                                             cache=token_cache_dir())]
        row = score(read)
        row["videos"] = [{"seed": s, "look": lk} for s, lk in specs]
        if name == "held_out":
            row["per_video"] = [{"seed": s, "look": lk, **{k: v for k, v in score([r]).items() if k != "per_activity"}}
                                for (s, lk), r in zip(specs, read)]
        res["sets"][name] = row
        print(f"{name:9s} activity top-1 on {row['event_tokens']} event tokens: {row['top1']}, "
              f"event AUC {row['event_auc']}", flush=True)
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
