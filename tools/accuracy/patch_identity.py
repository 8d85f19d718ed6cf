"""How well a frozen backbone's patch tokens tell the products apart: a linear probe per patch.

    python -m tools.accuracy.patch_identity --backbone checkpoints/lvm-tiny.safetensors \
        --backbone runs/new/backbone.safetensors --json out.json

Every patch that shows a product (``export/train/token_targets.token_fact_targets``: its centre inside
the product's box, or the box centre's patch) is labelled with the product's class. A linear
classifier (standardised tokens, AdamW, fixed seed) is fitted on the patches of the first
``--train-videos`` training videos (``training_video(0, i)``, their first ``--video-s`` seconds) and
scored on those of ``--eval-videos`` held-out videos (``heldout_video(1, i)``: even i in a look
training never saw, odd i in a training look). What it measures is the backbone alone: whether a
patch token carries the product it shows in a form that holds on videos it was not fitted on, which
every identity the reader learns on top of it depends on. One backbone per ``--backbone`` (a
checkpoint, or the bare ``backbone.safetensors`` lvm-train writes), all on the same patches.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _backbone(path: str, cfg):
    from export.model.backbone import Backbone
    from export.model.checkpoint import CheckpointError, load_backbone_state, read_metadata

    bb = Backbone(cfg.backbone, init_weights=False)
    try:
        read_metadata(path)
    except CheckpointError:
        bb.load_weights(path)  # a bare backbone file
    else:
        bb.load_state_dict(load_backbone_state(path, cfg))
    return bb.freeze().eval()


def _patches(spec: tuple[int, int], seconds: float, size: int, grid: int):
    """(frames (N, S, S, 3) uint8, class per patch (N, P), -1 where no product shows)."""
    import numpy as np

    from edge_runtime.checkout import CheckoutVideo
    from edge_runtime.checkout.catalog import PRODUCT_IDS
    from export.train.token_targets import token_fact_targets

    video = CheckoutVideo(seed=spec[0], look=spec[1], duration_s=seconds, size=size)
    ann = video.annotations()
    times, frames = zip(*video.frames(1.0, 0.0, None))
    inst = token_fact_targets(ann, np.asarray(times), grid)[0]
    class_of = {int(x["instance_id"]): PRODUCT_IDS[x["product"]] for x in ann["instances"]}
    cls = np.vectorize(lambda k: class_of.get(int(k), -1), otypes=[np.int64])(inst)
    return np.stack(frames), cls


def probe(backbone, train: list, test: list, classes: int, seed: int = 0, epochs: int = 30) -> dict:
    """Fit on ``train`` [(frames, classes)], score on each of ``test``: held-out accuracy overall and per video."""
    import numpy as np
    import torch

    def tokens(sets):
        xs, ys = [], []
        for frames, cls in sets:
            with torch.no_grad():
                tok = torch.cat([backbone(torch.from_numpy(frames[i : i + 256])) for i in range(0, len(frames), 256)])
            on = torch.from_numpy(cls >= 0)
            xs.append(tok[on])
            ys.append(torch.from_numpy(cls[cls >= 0]))
        return xs, ys

    xs, ys = tokens(train)
    X, y = torch.cat(xs), torch.cat(ys)
    mu, sd = X.mean(0), X.std(0) + 1e-5
    torch.manual_seed(seed)
    lin = torch.nn.Linear(X.shape[1], classes)
    opt = torch.optim.AdamW(lin.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        perm = torch.randperm(len(X))
        for j in range(0, len(X), 512):
            b = perm[j : j + 512]
            loss = torch.nn.functional.cross_entropy(lin((X[b] - mu) / sd), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    txs, tys = tokens(test)
    with torch.no_grad():
        right = [(lin((x - mu) / sd).argmax(1) == t).numpy() for x, t in zip(txs, tys)]
        fit = float((lin((X - mu) / sd).argmax(1) == y).float().mean())
    every = np.concatenate(right)
    return {"held_out": round(float(every.mean()), 4), "per_video": [round(float(r.mean()), 4) for r in right],
            "patches": [len(r) for r in right], "fitted": round(fit, 4), "train_patches": len(X)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.patch_identity", description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", action="append", required=True,
                    help="a checkpoint or a backbone.safetensors (repeat to compare several)")
    ap.add_argument("--config", default="lvm-tiny", help="the model config the backbones belong to")
    ap.add_argument("--train-videos", type=int, default=8)
    ap.add_argument("--eval-videos", type=int, default=2)
    ap.add_argument("--video-s", type=float, default=600.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from edge_runtime.checkout import PRODUCTS
    from edge_runtime.checkout.scene import heldout_video, training_video
    from edge_runtime.config import ConfigError, resolve_model_config
    from export.model.checkpoint import CheckpointError

    torch.set_num_threads(args.threads)
    try:
        cfg = resolve_model_config(args.config)
    except ConfigError as err:
        ap.exit(2, f"{ap.prog}: {err}\n")
    if min(args.train_videos, args.eval_videos) < 1 or not args.video_s > 0:
        ap.exit(2, f"{ap.prog}: --train-videos and --eval-videos must be at least 1, --video-s above 0\n")
    backbones = {}
    for path in args.backbone:  # every file checked before the videos are drawn
        try:
            backbones[path] = _backbone(path, cfg)
        except (CheckpointError, ConfigError, OSError, RuntimeError) as err:
            ap.exit(2, f"{ap.prog}: {str(err).splitlines()[0]}\n")
    size, grid = cfg.backbone.image_size, cfg.backbone.grid
    train = [_patches(training_video(0, i), args.video_s, size, grid) for i in range(args.train_videos)]
    test = [_patches(heldout_video(1, i), args.video_s, size, grid) for i in range(args.eval_videos)]
    if not all((c >= 0).any() for _, c in train + test):
        ap.exit(2, f"{ap.prog}: a video shows no product in its first {args.video_s:g} s: use a longer --video-s\n")
    counts = np.bincount(np.concatenate([c[c >= 0] for _, c in test]), minlength=len(PRODUCTS))
    out = {"train_videos": [list(training_video(0, i)) for i in range(args.train_videos)],
           "eval_videos": [list(heldout_video(1, i)) for i in range(args.eval_videos)], "video_s": args.video_s,
           "classes": len(PRODUCTS), "most_frequent_class": round(float(counts.max() / counts.sum()), 4), "backbones": {}}
    for path, bb in backbones.items():
        res = probe(bb, train, test, len(PRODUCTS))
        out["backbones"][path] = res
        print(f"{path}: held-out patch class accuracy {res['held_out']:.1%} (per video {res['per_video']}), "
              f"fitted {res['fitted']:.1%}; most frequent class {out['most_frequent_class']:.1%}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
