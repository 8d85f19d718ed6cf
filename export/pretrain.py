"""Pre-training the tiny backbone on per-frame labels the generator knows, before freezing it.

What the backbone sees (documented in README): frames of the *training* videos only, labelled
with the product classes visible, whether a hand is in view, the activity in progress (or none),
and a 7x7 map of which patches overlap a product box; plus the instance crops labelled with their
product class, so crop tokens and in-scene tokens share a space. No evaluation video or look.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edge_runtime.checkout import ACTIVITIES, PRODUCTS
from export.backbone import Backbone
from export.data import VideoData


def _patch_map(boxes: list[tuple[float, float, float, float]], grid: int) -> np.ndarray:
    m = np.zeros((grid, grid), np.float32)
    for x1, y1, x2, y2 in boxes:
        c1, r1 = int(np.floor(x1 * grid)), int(np.floor(y1 * grid))
        c2, r2 = int(np.ceil(x2 * grid)), int(np.ceil(y2 * grid))
        m[max(r1, 0):min(r2, grid), max(c1, 0):min(c2, grid)] = 1.0
    return m.reshape(-1)


def frame_targets(data: VideoData, grid: int) -> dict[str, np.ndarray]:
    """Per-frame labels at data.times, from the generator's own ground truth."""
    n = len(data.times)
    prod = np.zeros((n, len(PRODUCTS)), np.float32)
    hand = np.zeros((n,), np.float32)
    act = np.full((n,), len(ACTIVITIES), np.int64)  # last class = no activity
    patches = np.zeros((n, grid * grid), np.float32)
    tracks = {int(k): np.asarray(v, np.float64).reshape(-1, 5) for k, v in data.annotations["boxes"].items()}
    for i, t in enumerate(data.times):
        lab = data.video.frame_labels(float(t))
        prod[i, list(lab.get("products_present", []))] = 1.0
        hand[i] = float(bool(lab.get("hand_present", False)))
        a = lab.get("activity", -1)
        if a is not None and a >= 0:
            act[i] = int(a)
        boxes = []
        for tr in tracks.values():
            j = np.abs(tr[:, 0] - t).argmin() if len(tr) else None
            if j is not None and abs(tr[j, 0] - t) <= 0.11:
                boxes.append(tuple(tr[j, 1:]))
        patches[i] = _patch_map(boxes, grid)
    return {"products": prod, "hand": hand, "activity": act, "patches": patches}


class _PretrainHeads(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.products = nn.Linear(dim, len(PRODUCTS))
        self.hand = nn.Linear(dim, 1)
        self.activity = nn.Linear(dim, len(ACTIVITIES) + 1)
        self.patch = nn.Linear(dim, 1)


def pretrain_backbone(backbone: Backbone, videos: list[VideoData], *, epochs: int, seed: int = 0,
                      batch: int = 64, lr: float = 2e-3, max_frames: int = 3000,
                      progress: bool = True) -> dict[str, float]:
    """Train the backbone in place on the videos' frames (which must still be attached), then freeze."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    grid = backbone.cfg.grid
    frames, targets = [], {"products": [], "hand": [], "activity": [], "patches": []}
    for v in videos:
        tg = frame_targets(v, grid)
        # idle frames dominate a kiosk: keep every busy frame and as many idle ones
        busy = np.flatnonzero((tg["hand"] > 0) | (tg["activity"] < len(ACTIVITIES)))
        idle = np.flatnonzero(~((tg["hand"] > 0) | (tg["activity"] < len(ACTIVITIES))))
        idle = rng.choice(idle, size=min(len(idle), max(len(busy), 32)), replace=False) if len(idle) else idle
        keep = np.sort(np.concatenate([busy, idle]))
        per_video = max(max_frames // len(videos), 16)
        if len(keep) > per_video:
            keep = np.sort(rng.choice(keep, size=per_video, replace=False))
        frames.append(v.frames[keep])
        for k in targets:
            targets[k].append(tg[k][keep])
        # crops: product class only
        for inst in v.annotations["instances"]:
            frames.append(v.object_crop(inst["instance_id"], backbone.cfg.image_size)[None])
            p = np.zeros((1, len(PRODUCTS)), np.float32)
            p[0, inst["class_id"]] = 1.0
            targets["products"].append(p)
            targets["hand"].append(np.full((1,), -1.0, np.float32))  # -1: not labelled
            targets["activity"].append(np.full((1,), -100, np.int64))
            targets["patches"].append(np.full((1, grid * grid), -1.0, np.float32))
    x = np.concatenate(frames)
    y = {k: torch.from_numpy(np.concatenate(v)) for k, v in targets.items()}
    heads = _PretrainHeads(backbone.cfg.dim)
    backbone.requires_grad_(True)
    backbone.train()
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(heads.parameters()), lr=lr, weight_decay=1e-4)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    n = len(x)
    steps = epochs * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="backbone pre-training", disable=not progress, leave=False)
    stats: dict[str, float] = {}
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            tok = backbone(torch.from_numpy(x[idx]))
            pooled = tok.mean(1)
            lp = bce(heads.products(pooled), y["products"][idx]).mean()
            hm = y["hand"][idx]
            lh = (bce(heads.hand(pooled).squeeze(-1), hm.clamp_min(0)) * (hm >= 0)).sum() / (hm >= 0).sum().clamp_min(1)
            la = ce(heads.activity(pooled), y["activity"][idx])
            pm = y["patches"][idx]
            lpatch = (bce(heads.patch(tok).squeeze(-1), pm.clamp_min(0)) * (pm >= 0)).sum() / (pm >= 0).sum().clamp_min(1)
            la = torch.nan_to_num(la)  # a batch of crops only has no activity labels
            loss = lp + lh + la + lpatch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            stats = {k: float(v.detach()) for k, v in
                     (("products", lp), ("hand", lh), ("activity", la), ("patches", lpatch))}
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    backbone.freeze()
    stats["frames"] = float(n)
    return stats
