"""Pre-training the tiny backbone on per-frame labels, before freezing it.

What the backbone sees (documented in docs/training.md): frames of the *training* videos only, labelled
with the product classes visible, whether a hand is in view, the activity in progress (or none),
and a 7x7 map of which patches overlap a product box; plus the instance crops labelled with their
product class, so crop tokens and in-scene tokens share a space. No evaluation video or look.
Generated videos take these labels from the generator itself; a dataset's videos from their
annotations (boxes and events), where "hand in view" is not known and is left unlabelled.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edge_runtime.checkout import BASE_ACTIVITIES, PRODUCTS
from export.model.backbone import Backbone
from export.dataset.video_data import VideoData
from export.train.token_targets import token_fact_targets


def _patch_map(boxes: list[tuple[float, float, float, float]], grid: int) -> np.ndarray:
    m = np.zeros((grid, grid), np.float32)
    for x1, y1, x2, y2 in boxes:
        c1, r1 = int(np.floor(x1 * grid)), int(np.floor(y1 * grid))
        c2, r2 = int(np.ceil(x2 * grid)), int(np.ceil(y2 * grid))
        m[max(r1, 0):min(r2, grid), max(c1, 0):min(c2, grid)] = 1.0
    return m.reshape(-1)


def _tracks(ann: dict) -> dict[int, np.ndarray]:
    return {int(k): np.asarray(v, np.float64).reshape(-1, 5) for k, v in ann["boxes"].items()}


def _boxes_at(tracks: dict[int, np.ndarray], t: float, tol: float) -> list[tuple[int, tuple]]:
    """(instance, box) of every track with a box within ``tol`` seconds of t (its nearest one)."""
    out = []
    for iid, tr in tracks.items():
        if len(tr):
            j = np.abs(tr[:, 0] - t).argmin()
            if abs(tr[j, 0] - t) <= tol:
                out.append((iid, tuple(tr[j, 1:])))
    return out


def frame_targets(data: VideoData, grid: int, n_objects: int = len(PRODUCTS),
                  n_activities: int = len(BASE_ACTIVITIES)) -> dict[str, np.ndarray]:
    """Per-frame labels at data.times: the generator's own per-frame truth for generated videos;
    for files, what the annotations say (object classes with a box within half a box period, the
    activity of the event in progress, the boxes' patches; whether a hand is in view is unknown: -1)."""
    n = len(data.times)
    ann = data.annotations
    prod = np.zeros((n, n_objects), np.float32)
    hand = np.zeros((n,), np.float32) if data.video is not None else np.full((n,), -1.0, np.float32)
    act = np.full((n,), n_activities, np.int64)  # last class = no activity
    patches = np.zeros((n, grid * grid), np.float32)
    tracks = _tracks(ann)
    # a box stands for half a box period either side (5 fps boxes: 0.1 s, plus rounding slack)
    tol = 0.5 / float(ann.get("fps_boxes", 5.0)) + 0.01
    class_of = {int(i["instance_id"]): int(i["class_id"]) for i in ann["instances"]}
    events = sorted(ann["events"], key=lambda e: e["start"])
    for i, t in enumerate(data.times):
        seen = _boxes_at(tracks, float(t), tol)
        if data.video is not None:
            lab = data.video.frame_labels(float(t))
            prod[i, list(lab.get("products_present", []))] = 1.0
            hand[i] = float(bool(lab.get("hand_present", False)))
            a = lab.get("activity", -1)
        else:
            prod[i, sorted({class_of[iid] for iid, _ in seen if iid in class_of})] = 1.0
            now = [e for e in events if e["start"] <= t < e["end"]]
            a = int(now[-1]["activity_id"]) if now else -1  # overlapping events: the latest begun
        if a is not None and a >= 0:
            act[i] = int(a)
        patches[i] = _patch_map([b for _, b in seen], grid)
    inst, patch_act = token_fact_targets(ann, np.asarray(data.times, np.float64), grid)[:2]
    classes = np.vectorize(lambda k: class_of.get(int(k), -1), otypes=[np.int64])(inst) if inst.size else inst
    # per patch: the class of the product it shows, n_objects for none (patch_classes)
    patch_class = np.where(classes >= 0, classes, n_objects).astype(np.int64)
    # per product patch: the activity of that product's event in progress, n_activities for none;
    # patches showing no product are left out (-100): patch_class already tells product from none
    patch_activity = np.where(inst >= 0, np.where(patch_act >= 0, patch_act, n_activities), -100).astype(np.int64)
    return {"products": prod, "hand": hand, "activity": act, "patches": patches, "patch_class": patch_class,
            "patch_activity": patch_activity}


class _PretrainHeads(nn.Module):
    def __init__(self, dim: int, n_objects: int, n_activities: int) -> None:
        super().__init__()
        self.products = nn.Linear(dim, n_objects)
        self.hand = nn.Linear(dim, 1)
        self.activity = nn.Linear(dim, n_activities + 1)
        self.patch = nn.Linear(dim, 1)
        self.patch_class = nn.Linear(dim, n_objects + 1)  # + "no product"
        self.patch_activity = nn.Linear(dim, n_activities + 1)  # + "no activity"


def pretrain_backbone(backbone: Backbone, videos: list[VideoData], *, epochs: int, seed: int = 0,
                      batch: int = 64, lr: float = 2e-3, max_frames: int = 6000,
                      progress: bool = True, labels: dict | None = None, patch_classes: float = 0.0,
                      patch_activities: float = 0.0) -> dict[str, float]:
    """Train the backbone in place on the videos' frames (which must still be attached), then freeze.
    ``labels`` ({"activities": [...], "products": [...]}) size the class heads; default: the generator's."""
    n_obj = len(labels["products"]) if labels else len(PRODUCTS)
    n_act = len(labels["activities"]) if labels else len(BASE_ACTIVITIES)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    grid = backbone.cfg.grid
    frames, targets = [], {"products": [], "hand": [], "activity": [], "patches": [], "patch_class": [],
                           "patch_activity": []}
    for v in videos:
        tg = frame_targets(v, grid, n_obj, n_act)
        # idle frames dominate a kiosk: keep every busy frame and as many idle ones
        busy = np.flatnonzero((tg["hand"] > 0) | (tg["activity"] < n_act))
        idle = np.flatnonzero(~((tg["hand"] > 0) | (tg["activity"] < n_act)))
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
            p = np.zeros((1, n_obj), np.float32)
            p[0, inst["class_id"]] = 1.0
            targets["products"].append(p)
            targets["hand"].append(np.full((1,), -1.0, np.float32))  # -1: not labelled
            targets["activity"].append(np.full((1,), -100, np.int64))
            targets["patches"].append(np.full((1, grid * grid), -1.0, np.float32))
            targets["patch_class"].append(np.full((1, grid * grid), -100, np.int64))
            targets["patch_activity"].append(np.full((1, grid * grid), -100, np.int64))
    x = np.concatenate(frames)
    y = {k: torch.from_numpy(np.concatenate(v)) for k, v in targets.items()}
    heads = _PretrainHeads(backbone.cfg.dim, n_obj, n_act)
    backbone.requires_grad_(True)
    backbone.train()
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(heads.parameters()), lr=lr, weight_decay=1e-4)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    ce_none = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")
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
            if patch_classes > 0:
                pc = y["patch_class"][idx].reshape(-1)
                logits = heads.patch_class(tok).reshape(len(pc), -1)
                # products and "none" weigh alike in total: most patches show no product
                on, off = (pc >= 0) & (pc < n_obj), pc == n_obj  # crops' patches (-100) in neither
                lpc = ce_none(logits, pc)
                lpc = (lpc * on).sum() / on.sum().clamp_min(1) + (lpc * off).sum() / off.sum().clamp_min(1)
                loss = loss + patch_classes * lpc
            if patch_activities > 0:
                pa = y["patch_activity"][idx].reshape(-1)
                logits = heads.patch_activity(tok).reshape(len(pa), -1)
                # a product's patches in an event and idle ones weigh alike in total: most are idle
                busy, idle = (pa >= 0) & (pa < n_act), pa == n_act
                lpa = ce_none(logits, pa)
                lpa = (lpa * busy).sum() / busy.sum().clamp_min(1) + (lpa * idle).sum() / idle.sum().clamp_min(1)
                loss = loss + patch_activities * lpa
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            stats = {k: float(v.detach()) for k, v in
                     (("products", lp), ("hand", lh), ("activity", la), ("patches", lpatch))}
            if patch_classes > 0:
                stats["patch_classes"] = float(lpc.detach())
            if patch_activities > 0:
                stats["patch_activities"] = float(lpa.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    backbone.freeze()
    stats["frames"] = float(n)
    return stats
