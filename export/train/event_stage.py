"""lvm-train's event stage: the event head (export/model/event_head.py) on the frozen backbone's tokens
of generated frames at ``event_fps``, written as ``<checkpoint stem>-events.safetensors`` beside the
checkpoint, where lvm-export finds it.

Frames come from training videos (``training_video``; every ``EVENT_SHRINK_EVERY``-th with the scan
avoidance of ``EVENT_SHRINK``), random ones plus ``EVENT_HELD_FRAMES`` more
from each video's handling periods (an item in a hand: the items the checkout alerts follow), each
augmented once (export/train/event_augment.py: counter colour, camera roll/zoom/shift, light and
sensor), their tokens are encoded once and kept in memory (float16), and only the head trains: focal
loss on the item cells, L1 + gIoU on their boxes, cross-entropy on their products (a held item's cell
weighs ``HELD_WEIGHT`` in these three), BCE on "held", cross-entropy on each cell's zone and on the frame's
scanner light (flash frames drawn for ``FLASH_SHARE`` of each batch). The detection threshold is the
one with the best F1 on a further training-look video the head never trained on; the figures of the
file's ``heldout`` section are measured on held-out videos in looks training never saw
(``heldout_video``, even i), at that threshold, with the runtime's own decoding
(edge_runtime/items/head_decode.py), recall also per item state (held / basket / counter / scanner / bag).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from edge_runtime.checkout import CheckoutVideo, heldout_video, training_video
from edge_runtime.items.detections import LIGHTS, ZONE_CLASSES
from edge_runtime.items.head_decode import NMS_IOU, box_iou, decode
from export.model.event_head import EventHead, EventHeadConfig, save_event_head
from export.train.eta import StepETA
from export.train.event_data import STATES, EventFrames, frame_times, video_frames
from export.train.event_defaults import (
    EVENT_FRAMES,
    EVENT_HELD_FRAMES,
    EVENT_HELDOUT_FRAMES,
    EVENT_HELDOUT_VIDEOS,
    EVENT_SHRINK,
    EVENT_SHRINK_EVERY,
    EVENT_STEPS,
    EVENT_VIDEOS,
    THRESHOLD_FRAMES,
)
from export.train.losses import giou

HELD_WEIGHT = 3.0           # loss weight of a held item's cell (score, box, product) against 1 for the others
EVENT_BATCH = 128
EVENT_LR = 3e-3
EVENT_WEIGHT_DECAY = 0.05
FLASH_SHARE = 0.1           # of each batch: frames that show a scanner flash, green and red alike
MATCH_IOU = 0.5
THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.05), 2)


def detection_counts(dets, frames: EventFrames) -> dict[str, int]:
    """Greedy matching per frame (highest score first) at IoU >= MATCH_IOU -> counts."""
    gt = dets_n = matched = right = 0
    per_state = {s: [0, 0] for s in STATES}  # items, matched
    for d, boxes, classes, states in zip(dets, frames.boxes, frames.classes, frames.states):
        gt, dets_n = gt + len(boxes), dets_n + len(d)
        for st in states:
            if st in per_state:
                per_state[st][0] += 1
        if not len(d) or not len(boxes):
            continue
        iou = box_iou(d.boxes, boxes)
        free = np.ones(len(boxes), bool)
        for i in range(len(d)):  # Detections are ordered by score
            cand = np.where(free, iou[i], 0.0)
            j = int(cand.argmax())
            if cand[j] >= MATCH_IOU:
                free[j] = False
                matched += 1
                right += int(d.classes[i] == classes[j])
                if states[j] in per_state:
                    per_state[states[j]][1] += 1
    return {"items": gt, "detections": dets_n, "matched": matched, "class_right": right, "per_state": per_state}


def run_head(head: EventHead, frames: EventFrames, batch: int = 1024) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outs = [head(frames.tokens[i:i + batch].float()) for i in range(0, len(frames), batch)]
    return {k: torch.cat([o[k] for o in outs]).numpy() for k in outs[0]}


def measure(head: EventHead, frames: EventFrames, threshold: float) -> dict:
    """The held-out figures of ``frames`` at ``threshold``."""
    out = run_head(head, frames)
    dets = decode(out, np.zeros(len(frames)), threshold)
    c = detection_counts(dets, frames)
    light_pred = out["light"].argmax(-1)
    light = frames.light.numpy()
    flash = light > 0
    zone_right = out["zone"].argmax(-1) == frames.zone.numpy()
    return {"frames": len(frames), "items": c["items"], "threshold": threshold,
            "recall": round(c["matched"] / max(c["items"], 1), 4),
            "precision": round(c["matched"] / max(c["detections"], 1), 4),
            "class_accuracy": round(c["class_right"] / max(c["matched"], 1), 4),
            "light_accuracy_flash": round(float((light_pred[flash] == light[flash]).mean()), 4) if flash.any() else None,
            "flash_frames": int(flash.sum()),
            "light_accuracy_no_flash": round(float((light_pred[~flash] == 0).mean()), 4),
            "zone_cell_accuracy": round(float(zone_right.mean()), 4),
            "recall_by_state": {st: round(m / n, 4) for st, (n, m) in c["per_state"].items() if n},
            "items_by_state": {st: n for st, (n, _) in c["per_state"].items() if n},
            "match_iou": MATCH_IOU, "nms_iou": NMS_IOU}


def best_threshold(head: EventHead, frames: EventFrames) -> float:
    """The threshold of the best detection F1 on ``frames``."""
    out = run_head(head, frames)
    best, best_f1 = 0.5, -1.0
    for th in THRESHOLDS:
        c = detection_counts(decode(out, np.zeros(len(frames)), float(th)), frames)
        f1 = 2 * c["matched"] / max(c["items"] + c["detections"], 1)
        if f1 > best_f1:
            best, best_f1 = float(th), f1
    return best


def losses(head: EventHead, fr: EventFrames, idx: torch.Tensor, held_weight: float = HELD_WEIGHT) -> dict[str, torch.Tensor]:
    lg = head.logits(fr.tokens[idx].float())
    item = fr.item[idx]
    held = fr.held[idx]
    # a held item's cell weighs held_weight: its score (focal, per cell), its box and its product
    w = 1.0 + (held_weight - 1.0) * held * item
    n_pos = (w * item).sum().clamp_min(1)
    target = item.float()
    # focal loss (Lin et al. 2017, export/train/losses.py's) per cell, weighted, over the weighted item count
    p = torch.sigmoid(lg["score"])
    ce = F.binary_cross_entropy_with_logits(lg["score"], target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = 0.25 * target + 0.75 * (1 - target)
    score = (w * a_t * (1 - p_t) ** 2 * ce).sum() / n_pos
    terms = {"score": score,
             "zone": F.cross_entropy(lg["zone"].reshape(-1, lg["zone"].shape[-1]), fr.zone[idx].reshape(-1)),
             "light": F.cross_entropy(lg["light"], fr.light[idx])}
    if item.any():
        pred, tbox, wi = lg["box"][item], fr.box[idx][item], w[item]
        per = 5.0 * (pred - tbox).abs().sum(-1) + 2.0 * (1 - giou(pred, tbox))
        terms["box"] = (wi * per).sum() / wi.sum()
        terms["class"] = (wi * F.cross_entropy(lg["class"][item], fr.cls[idx][item], reduction="none")).sum() / wi.sum()
        terms["held"] = F.binary_cross_entropy_with_logits(lg["held"][item], held[item])
    return terms


def event_frames(backbone, *, grid: int, size: int, seed: int = 0, videos: int = EVENT_VIDEOS,
                 frames: int = EVENT_FRAMES, held_frames: int = EVENT_HELD_FRAMES,
                 heldout_videos: int = EVENT_HELDOUT_VIDEOS, heldout_frames: int = EVENT_HELDOUT_FRAMES,
                 video_s: float = 1800.0, fps: float = 5.0,
                 progress: bool = True) -> tuple[EventFrames, EventFrames, EventFrames]:
    """-> (training, threshold, held-out) frames, encoded by ``backbone``."""
    # training looks: the head's videos, then one more it never trains on (the threshold's); held-out looks last
    plan = [("train", *training_video(seed, i), frames, EVENT_SHRINK if i % EVENT_SHRINK_EVERY else None)
            for i in range(videos)]
    plan.append(("threshold", *training_video(seed, videos), THRESHOLD_FRAMES, None))
    plan += [("heldout", *heldout_video(seed, 2 * i), heldout_frames, None) for i in range(heldout_videos)]
    chosen = []
    for part, vseed, look, count, shrink in plan:
        video = CheckoutVideo(vseed, video_s, size=size, look=look, shrink=shrink)
        # each video's own draws: its frames do not depend on how many videos come before it
        rng = np.random.default_rng([seed, vseed])
        train = part == "train"
        times = frame_times(video, fps, count, rng, held=held_frames if train else 0)
        chosen.append((part, video, times, rng if train else None))
    total = sum(len(c[2]) for c in chosen)
    backbone.eval()
    parts: dict[str, list[EventFrames]] = {"train": [], "threshold": [], "heldout": []}
    with tqdm(total=total, desc="event stage: frames", unit="frame", mininterval=5.0, disable=not progress) as bar:
        for part, video, times, aug_rng in chosen:
            parts[part].append(video_frames(backbone, video, times, grid, tick=bar.update, rng=aug_rng))
    return tuple(EventFrames.cat(parts[p]) for p in ("train", "threshold", "heldout"))


def fit_head(train: EventFrames, *, grid: int, num_classes: int, ec: EventHeadConfig | None = None,
             seed: int = 0, steps: int = EVENT_STEPS, batch: int = EVENT_BATCH, lr: float = EVENT_LR,
             held_weight: float = HELD_WEIGHT, progress: bool = True,
             log=print) -> tuple[EventHead, dict[str, float]]:
    """A fresh head trained on ``train`` -> (head in eval mode, its last losses)."""
    torch.manual_seed(seed)
    head = EventHead(train.tokens.shape[-1], grid, num_classes, ec or EventHeadConfig())
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=EVENT_WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    weights = train.weights(FLASH_SHARE)
    gen = torch.Generator().manual_seed(seed)
    eta = StepETA("event stage", steps, log, after=20)
    head.train()
    last: dict[str, float] = {}
    bar = tqdm(range(steps), desc="event stage: steps", mininterval=5.0, disable=not progress)
    for step in bar:
        idx = torch.multinomial(weights, batch, replacement=True, generator=gen)
        terms = losses(head, train, idx, held_weight)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        eta.step()
        if step % 50 == 49 or step == steps - 1:
            last = {k: round(float(v.detach()), 4) for k, v in terms.items()}
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return head.eval(), last


def train_events(backbone, *, grid: int, size: int, classes: list[str], out: Path, checkpoint: Path | None,
                 config_sha256: str, seed: int = 0, videos: int = EVENT_VIDEOS, frames: int = EVENT_FRAMES,
                 held_frames: int = EVENT_HELD_FRAMES, heldout_videos: int = EVENT_HELDOUT_VIDEOS,
                 heldout_frames: int = EVENT_HELDOUT_FRAMES, steps: int = EVENT_STEPS, batch: int = EVENT_BATCH,
                 lr: float = EVENT_LR, video_s: float = 1800.0, ec: EventHeadConfig = EventHeadConfig(),
                 progress: bool = True, log=print) -> dict:
    """Train the event head on ``backbone``'s tokens, measure it, write ``out``; -> the file's metadata."""
    from edge_runtime.file_hash import sha256_file

    t0 = time.time()
    train, thresh_fr, held = event_frames(backbone, grid=grid, size=size, seed=seed, videos=videos, frames=frames,
                                          held_frames=held_frames, heldout_videos=heldout_videos,
                                          heldout_frames=heldout_frames, video_s=video_s, fps=ec.event_fps,
                                          progress=progress)
    t_frames = time.time() - t0
    log(f"event stage: {len(train)} training frames ({int((train.light > 0).sum())} with a flash), "
        f"{len(thresh_fr)} threshold and {len(held)} held-out frames encoded in {t_frames:.0f} s")
    t_train = time.time()
    head, last = fit_head(train, grid=grid, num_classes=len(classes), ec=ec, seed=seed, steps=steps, batch=batch,
                          lr=lr, progress=progress, log=log)
    t_train = time.time() - t_train
    threshold = best_threshold(head, thresh_fr)
    heldout = measure(head, held, threshold)
    by_state = ", ".join(f"{k} {v:.3f}" for k, v in heldout["recall_by_state"].items())
    log(f"event stage: held-out ({heldout['frames']} frames, looks never trained on, threshold {threshold:g}): "
        f"recall {heldout['recall']:.3f} ({by_state}), precision {heldout['precision']:.3f} at IoU {MATCH_IOU:g}, class "
        f"{heldout['class_accuracy']:.3f}, light {heldout['light_accuracy_flash']} on {heldout['flash_frames']} "
        f"flash frames and {heldout['light_accuracy_no_flash']:.3f} without, zone cells {heldout['zone_cell_accuracy']:.3f}")
    meta = {"config_sha256": config_sha256, "classes": list(classes), "zones": list(ZONE_CLASSES),
            "light_states": list(LIGHTS), "threshold": threshold, "heldout": heldout,
            "train": {"videos": videos, "frames": len(train), "flash_frames": int((train.light > 0).sum()),
                      "held_frames_per_video": held_frames, "held_weight": HELD_WEIGHT,
                      "shrink": EVENT_SHRINK, "shrink_every": EVENT_SHRINK_EVERY,
                      "video_s": video_s, "steps": steps, "batch": batch, "lr": lr,
                      "weight_decay": EVENT_WEIGHT_DECAY, "flash_share": FLASH_SHARE, "augmented": True,
                      "seed": seed, "frames_seconds": round(t_frames, 1), "train_seconds": round(t_train, 1),
                      "seconds": round(time.time() - t0, 1), "threads": torch.get_num_threads(), "last_losses": last}}
    if checkpoint is not None:
        meta["checkpoint"] = str(checkpoint)
        meta["checkpoint_sha256"] = sha256_file(checkpoint)
    save_event_head(out, head, meta)
    log(f"event stage: wrote {out} ({meta['train']['seconds']:.0f} s)")
    return meta
