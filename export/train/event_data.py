"""The event head's training and evaluation frames: generated checkout frames at ``event_fps``,
their frozen-backbone tokens (encoded once, kept in memory as float16) and per-cell targets.

Per frame: which cells hold an item's box centre (with that item's box, product and whether it is
held), which zone each cell's centre lies in (the scene's ZONES seen through the video's camera),
and the scanner light (off / green / red). A flash lasts 0.35 s, so a frame shows one in about 1 of
200: every frame on the ``event_fps`` grid that shows a flash is taken, beside the frames drawn at
random, and training draws them more often (``EventFrames.weights``). Training frames are augmented
before the backbone (export/train/event_augment.py); threshold and held-out frames are as rendered.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from edge_runtime.checkout import CheckoutVideo
from edge_runtime.checkout.scene import ZONES, apply_h
from edge_runtime.items.detections import LIGHTS, ZONE_CLASSES
from export.train.event_augment import augment, move_box, scanner_mask


@dataclass
class EventFrames:
    """N frames: tokens (N, P, d) float16 and the targets, per cell (N, P) unless said."""
    tokens: torch.Tensor
    item: torch.Tensor        # bool: an item's box centre lies in the cell
    box: torch.Tensor         # (N, P, 4) that item's box, x1, y1, x2, y2 in [0, 1]
    cls: torch.Tensor         # int64 its product id
    held: torch.Tensor        # float 1 when it is held
    zone: torch.Tensor        # int64 index into ZONE_CLASSES
    light: torch.Tensor       # (N,) int64 index into LIGHTS
    boxes: list[np.ndarray]   # per frame, every visible item's box (n, 4): what recall counts
    classes: list[np.ndarray]  # per frame, their product ids
    states: list[np.ndarray] = field(default_factory=list)  # per frame, their STATES (what recall is split by)

    def __len__(self) -> int:
        return len(self.tokens)

    def weights(self, flash_share: float) -> torch.Tensor:
        """Sampling weights that make frames with a flash ``flash_share`` of the draws, that share split
        evenly between the flash colours present."""
        flash = self.light > 0
        n_flash = int(flash.sum())
        if n_flash == 0 or n_flash == len(self):
            return torch.ones(len(self))
        w = torch.full((len(self),), (1 - flash_share) / (len(self) - n_flash))
        colours = [c for c in range(1, len(LIGHTS)) if bool((self.light == c).any())]
        for c in colours:
            this = self.light == c
            w[this] = flash_share / len(colours) / int(this.sum())
        return w

    @staticmethod
    def cat(parts: list[EventFrames]) -> EventFrames:
        fields = ("tokens", "item", "box", "cls", "held", "zone", "light")
        return EventFrames(*(torch.cat([getattr(p, f) for p in parts]) for f in fields),
                           [b for p in parts for b in p.boxes], [c for p in parts for c in p.classes],
                           [s for p in parts for s in p.states])


def cell_zones(video: CheckoutVideo, grid: int, affine: np.ndarray | None = None) -> np.ndarray:
    """(P,) int64: the zone (index into ZONE_CLASSES) holding each cell's centre, through the video's
    camera (and then ``affine``, an augmented frame's move)."""
    c = (np.arange(grid) + 0.5) / grid
    centres = np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)  # row-major: x varies fastest
    H = video.renderer.H if affine is None else affine @ video.renderer.H
    scene = apply_h(np.linalg.inv(H), centres)
    out = np.zeros(len(centres), np.int64)
    for z, name in enumerate(ZONE_CLASSES[1:], start=1):
        x1, y1, x2, y2 = ZONES[name]
        inside = (scene[:, 0] >= x1) & (scene[:, 0] <= x2) & (scene[:, 1] >= y1) & (scene[:, 1] <= y2)
        out[inside & (out == 0)] = z
    return out


def handling(labels: dict) -> bool:
    """Whether a frame falls in a handling period: the hand grips an item, or an item is held."""
    return labels["hand_mode"] == "grip" or any(i["held"] for i in labels["instances"])


def frame_times(video: CheckoutVideo, fps: float, count: int, rng: np.random.Generator,
                held: int = 0) -> np.ndarray:
    """``count`` random times on the ``fps`` grid, ``held`` more drawn from its handling periods (the
    held items the checkout alerts follow are the hardest to find) and every grid time that shows a
    scanner flash, sorted."""
    n_grid = int(np.floor(video.duration_s * fps - 1e-9)) + 1
    drawn = rng.choice(n_grid, size=min(count, n_grid), replace=False)
    flash = [k for t0, t1, _ in video.script.flashes
             for k in range(int(np.ceil(t0 * fps - 1e-9)), int(np.ceil(t1 * fps - 1e-9))) if k < n_grid]
    extra: list[int] = []
    if held:
        rest = np.setdiff1d(np.arange(n_grid), drawn)
        for k in rng.permutation(rest):
            if len(extra) == held:
                break
            if handling(video.frame_labels(k / fps)):
                extra.append(int(k))
    return np.unique(np.concatenate([drawn, np.array(flash + extra, np.int64)])) / fps


def targets(labels: dict, grid: int) -> tuple[np.ndarray, ...]:
    """Per-cell targets of one frame's ``frame_labels``: (item, box, cls, held) and its visible boxes,
    classes and states."""
    P = grid * grid
    item, box = np.zeros(P, bool), np.zeros((P, 4), np.float32)
    cls, held, area = np.zeros(P, np.int64), np.zeros(P, np.float32), np.zeros(P, np.float32)
    insts = labels["instances"]
    for inst in insts:
        b = np.asarray(inst["box"], np.float32)
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        p = min(int(cy * grid), grid - 1) * grid + min(int(cx * grid), grid - 1)
        a = (b[2] - b[0]) * (b[3] - b[1])
        if a > area[p]:  # two centres in one cell: the larger item (the one in front) is the cell's
            item[p], box[p], cls[p], held[p], area[p] = True, b, inst["class_id"], float(inst["held"]), a
    boxes = np.array([i["box"] for i in insts], np.float32).reshape(-1, 4)
    return (item, box, cls, held, boxes, np.array([i["class_id"] for i in insts], np.int64),
            np.array([instance_state(i) for i in insts], dtype=object))


# what per-state recall is split by: held in a hand, else the zone the item rests in
STATES = ("held", "basket", "counter", "scanner", "bag")


def instance_state(inst: dict) -> str:
    return "held" if inst["held"] else inst["zone"]


def encode(backbone, frames: np.ndarray, batch: int = 64) -> torch.Tensor:
    """(N, S, S, 3) uint8 frames through the frozen backbone -> (N, P, d) float16 tokens."""
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            out.append(backbone(torch.from_numpy(frames[i:i + batch])).to(torch.float16))
    return torch.cat(out)


def moved_labels(labels: dict, affine: np.ndarray) -> dict:
    """``frame_labels`` of a frame moved by ``affine``: its instances' boxes moved, those mostly out of view dropped."""
    insts = []
    for inst in labels["instances"]:
        box = move_box(np.asarray(inst["box"], np.float64), affine)
        if box is not None:
            insts.append({**inst, "box": box.tolist()})
    return {**labels, "instances": insts}


def video_frames(backbone, video: CheckoutVideo, times: np.ndarray, grid: int,
                 tick: Callable[[int], None] | None = None, rng: np.random.Generator | None = None) -> EventFrames:
    """One generated video's frames at ``times`` (``frame_times``), encoded, with their targets; with
    ``rng`` each frame is augmented (export/train/event_augment.py) and its targets moved with it."""
    rows, imgs, lights, zones, all_boxes, all_cls, all_states = [], [], [], [], [], [], []
    keep = scanner_mask(video) if rng is not None else None
    plain = cell_zones(video, grid)
    for t in times:
        labels, img, zone = video.frame_labels(t), video.frame(t), plain
        if rng is not None:
            aug = augment(img, video, keep, rng)
            img, labels, zone = aug.image, moved_labels(labels, aug.affine), cell_zones(video, grid, aug.affine)
        item, box, cls, held, boxes, classes, states = targets(labels, grid)
        rows.append((item, box, cls, held))
        all_boxes.append(boxes)
        all_cls.append(classes)
        all_states.append(states)
        lights.append(LIGHTS.index(labels["scanner_flash"] or "off"))
        imgs.append(img)
        zones.append(zone)
    tokens = encode(backbone, np.stack(imgs))
    if tick is not None:
        tick(len(times))
    item, box, cls, held = (torch.from_numpy(np.stack(col)) for col in zip(*rows))
    return EventFrames(tokens, item, box, cls, held, torch.from_numpy(np.stack(zones)),
                       torch.tensor(lights, dtype=torch.int64), all_boxes, all_cls, all_states)
