"""How well a frozen backbone's patch tokens tell the products, and what is done to them, apart: linear probes per patch.

    python -m tools.accuracy.patch_identity --backbone checkpoints/lvm-tiny.safetensors \
        --backbone runs/new/backbone.safetensors --json out.json

Every patch that shows a product (``export/train/token_targets.token_fact_targets``: its centre inside
the product's box, or the box centre's patch) is labelled with the product's class. A linear
classifier (standardised tokens, AdamW, fixed seed) is fitted on the patches of the first
``--train-videos`` training videos (``training_video(0, i)``, their first ``--video-s`` seconds) and
scored on those of ``--eval-videos`` held-out videos (``heldout_video(1, i)``: even i in a look
training never saw, odd i in a training look). What it measures is the backbone alone: whether a
patch token carries the product it shows in a form that holds on videos it was not fitted on, which
every identity the reader learns on top of it depends on. A second probe on the same patches
reads the activity of the event in progress on the product each shows, or none (accuracy and the
mean per-activity recall, since most product patches show no event). A third reads the product and
its label colour (items of a class differ only by one of 2-3 label colours and a slight tint): whether
the tokens could tell two items of one product apart, which activity answers over long windows need
(``tools/accuracy/activity_ceiling.py``). One backbone per ``--backbone`` (a checkpoint, or the bare
``backbone.safetensors`` lvm-train writes), all on the same patches.
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


def _labels() -> int:
    """The most label colours a product has (edge_runtime/checkout/catalog.py ``label_options``)."""
    from edge_runtime.checkout.catalog import PRODUCT_SPECS

    return max(len(p.label_options) for p in PRODUCT_SPECS)


def _patches(spec: tuple[int, int], seconds: float, size: int, grid: int):
    """(frames (N, S, S, 3) uint8, class per patch (N, P), -1 where no product shows, activity per
    patch (N, P): the activity of the event in progress on the product it shows, ``len(BASE_ACTIVITIES)``
    for none, -1 where no product shows, class and label colour per patch (N, P): class * _labels() +
    the item's label colour, -1 where no product shows)."""
    import numpy as np

    from edge_runtime.checkout import BASE_ACTIVITIES, CheckoutVideo
    from edge_runtime.checkout.catalog import PRODUCT_IDS
    from export.train.token_targets import token_fact_targets
    from tools.accuracy.activity_ceiling import item_label_colours

    video = CheckoutVideo(seed=spec[0], look=spec[1], duration_s=seconds, size=size)
    ann = video.annotations()
    times, frames = zip(*video.frames(1.0, 0.0, None))
    inst, act = token_fact_targets(ann, np.asarray(times), grid)[:2]
    class_of = {int(x["instance_id"]): PRODUCT_IDS[x["product"]] for x in ann["instances"]}
    cls = np.vectorize(lambda k: class_of.get(int(k), -1), otypes=[np.int64])(inst)
    act = np.where(cls >= 0, np.where(act >= 0, act, len(BASE_ACTIVITIES)), -1).astype(np.int64)
    colour = item_label_colours(video)
    col = np.vectorize(lambda k: colour.get(int(k), 0), otypes=[np.int64])(inst)
    return np.stack(frames), cls, act, np.where(cls >= 0, cls * _labels() + col, -1)


def _tokens(backbone, frames):
    import torch

    with torch.no_grad():
        return torch.cat([backbone(torch.from_numpy(frames[i : i + 256])) for i in range(0, len(frames), 256)])


def probe(train: list, test: list, classes: int, seed: int = 0, epochs: int = 30) -> dict:
    """Fit on ``train`` [(tokens (N, P, D), label per patch (N, P), -1 left out)], score on each of
    ``test``: held-out accuracy overall and per video, and balanced (the mean of each class's recall
    over the classes held-out patches show)."""
    import numpy as np
    import torch

    def pick(sets):
        xs, ys = [], []
        for tok, lab in sets:
            on = torch.from_numpy(lab >= 0)
            xs.append(tok[on])
            ys.append(torch.from_numpy(lab[lab >= 0]))
        return xs, ys

    xs, ys = pick(train)
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
    txs, tys = pick(test)
    with torch.no_grad():
        preds = [lin((x - mu) / sd).argmax(1).numpy() for x in txs]
        fit = float((lin((X - mu) / sd).argmax(1) == y).float().mean())
    right = [p == t.numpy() for p, t in zip(preds, tys)]
    every, truth = np.concatenate(right), np.concatenate([t.numpy() for t in tys])
    balanced = float(np.mean([every[truth == c].mean() for c in np.unique(truth)]))
    return {"held_out": round(float(every.mean()), 4), "balanced_held_out": round(balanced, 4),
            "per_video": [round(float(r.mean()), 4) for r in right],
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

    from edge_runtime.checkout import BASE_ACTIVITIES, PRODUCTS
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
    if not all((c >= 0).any() for _, c, _, _ in train + test):
        ap.exit(2, f"{ap.prog}: a video shows no product in its first {args.video_s:g} s: use a longer --video-s\n")
    counts = np.bincount(np.concatenate([c[c >= 0] for _, c, _, _ in test]), minlength=len(PRODUCTS))
    acts = np.bincount(np.concatenate([a[a >= 0] for _, _, a, _ in test]), minlength=len(BASE_ACTIVITIES) + 1)
    labs = np.concatenate([x[x >= 0] for _, _, _, x in test])
    # knowing each patch's product exactly and guessing its commonest label colour on these very patches
    label_by_class = sum(np.bincount(labs[labs // _labels() == c]).max() for c in np.unique(labs // _labels())) / len(labs)
    out = {"train_videos": [list(training_video(0, i)) for i in range(args.train_videos)],
           "eval_videos": [list(heldout_video(1, i)) for i in range(args.eval_videos)], "video_s": args.video_s,
           "classes": len(PRODUCTS), "most_frequent_class": round(float(counts.max() / counts.sum()), 4),
           "activity_share_none": round(float(acts[-1] / acts.sum()), 4),
           "class_known_commonest_label": round(float(label_by_class), 4), "backbones": {}}
    for path, bb in backbones.items():
        tok_train = [_tokens(bb, f) for f, _, _, _ in train]
        tok_test = [_tokens(bb, f) for f, _, _, _ in test]
        res = probe([(t, c) for t, (_, c, _, _) in zip(tok_train, train)],
                    [(t, c) for t, (_, c, _, _) in zip(tok_test, test)], len(PRODUCTS))
        # the same patches' activity: what is being done to the product each shows, or none
        res["activity"] = probe([(t, a) for t, (_, _, a, _) in zip(tok_train, train)],
                                [(t, a) for t, (_, _, a, _) in zip(tok_test, test)], len(BASE_ACTIVITIES) + 1)
        # the product and its label colour: right only where both are
        res["class_and_label"] = probe([(t, x) for t, (_, _, _, x) in zip(tok_train, train)],
                                       [(t, x) for t, (_, _, _, x) in zip(tok_test, test)], len(PRODUCTS) * _labels())
        out["backbones"][path] = res
        print(f"{path}: held-out patch class accuracy {res['held_out']:.1%} (per video {res['per_video']}), "
              f"fitted {res['fitted']:.1%}; most frequent class {out['most_frequent_class']:.1%}; "
              f"activity {res['activity']['held_out']:.1%}, balanced {res['activity']['balanced_held_out']:.1%} "
              f"(none {out['activity_share_none']:.1%}); class and label colour {res['class_and_label']['held_out']:.1%} "
              f"(the class known, its commonest colour: {out['class_known_commonest_label']:.1%})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
