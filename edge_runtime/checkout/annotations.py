"""Ground truth: the ReST-like annotation dict of a video and per-frame labels (docs/annotation-format.md)."""
from __future__ import annotations

import math

import numpy as np

from .catalog import ACTIVITIES, BASE_ACTIVITIES, PRODUCTS
from .render import LIFT_GROW, item_box, shape_of
from .scene import LOOKS, TRAIN_LOOKS, apply_h, zone_of
from .script import Script, hand_position, helper_position

# 2: instances say ``scanned``, ``transaction`` and ``shrink``. Videos without shrink are still written
# as version 1, byte for byte the format the shipped model and docs' figures were made on;
# readers derive the three fields for version 1 files (export/dataset/folder.py).
FORMAT_VERSION = 2
BOX_FPS = 5.0


def _r4(x: float) -> float:
    return round(float(x), 4)


def instance_boxes(script: Script, H, iid: int, fps: float = BOX_FPS) -> list[list[float]]:
    """[[t, x1, y1, x2, y2], ...] at t = k / fps while the instance is visible (and t < duration)."""
    inst = script.instances[iid]
    k0 = int(math.ceil(inst.appear * fps - 1e-9))
    k1 = int(math.ceil(min(inst.vanish, script.duration) * fps - 1e-9))
    times, poses = [], []
    for k in range(k0, k1):
        t = k / fps
        st = inst.pose(t)
        if st is not None:
            times.append(t)
            poses.append(st[0])
    if not times:
        return []
    boxes = boxes_for_poses(inst, np.asarray(poses, np.float64), H)
    out = []
    for t, b in zip(times, boxes.tolist()):
        if b[2] - b[0] > 1e-3 and b[3] - b[1] > 1e-3:
            out.append([_r4(t), _r4(b[0]), _r4(b[1]), _r4(b[2]), _r4(b[3])])
    return out


def boxes_for_poses(inst, poses: np.ndarray, H) -> np.ndarray:
    """(T, 5) poses -> (T, 4) clipped normalised boxes (same geometry as ``render.item_box``)."""
    hull = shape_of(inst).hull                                   # (K, 2)
    x, y, sc, ang, lift = poses.T
    s = inst.size * sc * (1.0 + LIFT_GROW * lift)
    c, si = np.cos(ang) * s, np.sin(ang) * s
    px = hull[None, :, 0] * c[:, None] - hull[None, :, 1] * si[:, None] + x[:, None]
    py = hull[None, :, 0] * si[:, None] + hull[None, :, 1] * c[:, None] + y[:, None]
    w = H[2, 0] * px + H[2, 1] * py + H[2, 2]
    u = (H[0, 0] * px + H[0, 1] * py + H[0, 2]) / w
    v = (H[1, 0] * px + H[1, 1] * py + H[1, 2]) / w
    return np.stack([np.clip(u.min(1), 0, 1), np.clip(v.min(1), 0, 1), np.clip(u.max(1), 0, 1), np.clip(v.max(1), 0, 1)], 1)


def copy_annotations(ann: dict) -> dict:
    """A deep copy of an annotation dict, much faster than copy.deepcopy for its known layout."""
    out = dict(ann)
    for k in ("activities", "products"):
        out[k] = list(ann[k])
    for k in ("instances", "events", "sessions"):
        out[k] = [dict(x) for x in ann[k]]
    for s in out["sessions"]:
        s["instance_ids"] = list(s["instance_ids"])
    out["boxes"] = {k: [list(r) for r in v] for k, v in ann["boxes"].items()}
    out["scanner_flashes"] = [list(f) for f in ann["scanner_flashes"]]
    if "shrink" in ann:
        out["shrink"] = dict(ann["shrink"])
    return out


def build_annotations(video_id: str, script: Script, look: int, size: int, H) -> dict:
    insts = [i for i in script.instances.values() if i.appear < script.duration]
    shrink = script.shrink is not None
    instances = [{"instance_id": i.instance_id, "product": PRODUCTS[i.class_id], "class_id": i.class_id,
                  "session": i.session, "appear": float(i.appear), "vanish": float(min(i.vanish, script.duration))}
                 for i in insts]
    if shrink:
        done = {(e.instance_id, ACTIVITIES[e.activity_id]) for e in script.events}
        left = {s.index for s in script.sessions if s.end <= script.duration}
        for rec, i in zip(instances, insts):
            # a behaviour is ground truth once it has happened within the video: the bag or the pass
            # over the scanner ended, or the shopper left with the basket (like events cut by the end)
            happened = {"bagged_unscanned": (i.instance_id, "bag") in done,
                        "pass_around": (i.instance_id, "pass_around") in done,
                        "left_in_basket": i.session in left}.get(i.shrink, False)
            rec.update(scanned=(i.instance_id, "scan") in done, transaction=i.session,
                       shrink=i.shrink if happened else None)
    boxes = {}
    for inst in insts:
        b = instance_boxes(script, H, inst.instance_id)
        if b:
            boxes[str(inst.instance_id)] = b
    return {
        "format": "lvm-edge/checkout-rest",
        "version": FORMAT_VERSION if shrink else 1,
        "video_id": video_id,
        "seed": script.seed,
        "look": look,
        "look_name": LOOKS[look].name,
        "look_split": "train" if look in TRAIN_LOOKS else "eval",
        "duration_s": float(script.duration),
        "fps_boxes": BOX_FPS,
        "size": size,
        "activities": list(ACTIVITIES if shrink else BASE_ACTIVITIES),
        "products": list(PRODUCTS),
        "instances": instances,
        "events": [{"activity": ACTIVITIES[e.activity_id], "activity_id": e.activity_id, "instance_id": e.instance_id,
                    "start": float(e.start), "end": float(e.end), "session": e.session} for e in script.events],
        "boxes": boxes,
        "sessions": [{"session": s.index, "start": float(s.start), "end": float(min(s.end, script.duration)),
                      "instance_ids": list(s.instance_ids)} for s in script.sessions if s.start < script.duration],
        "scanner_flashes": [[float(a), float(b), c] for a, b, c in script.flashes if a < script.duration],
    } | ({"shrink": script.shrink.to_dict()} if shrink else {})


def frame_labels(script: Script, H, t: float) -> dict:
    """What is in the frame at t (for backbone pre-training and debugging)."""
    sess = script.session_at(t) if t < script.duration else None
    zones: dict[str, list[int]] = {"basket": [], "counter": [], "scanner": [], "bag": [], "hand": []}
    instances = []
    if sess is not None:
        for iid in sess.instance_ids:
            inst = script.instances[iid]
            st = inst.pose(t)
            if st is None:
                continue
            pose, held = st
            box = item_box(inst, pose, H)
            if box is None:
                continue
            z = "hand" if held else zone_of(pose[0], pose[1])
            zones.setdefault(z, []).append(inst.class_id)
            c = apply_h(H, np.array([[pose[0], pose[1]]]))[0]
            instances.append({"instance_id": iid, "class_id": inst.class_id, "zone": z, "held": held,
                              "box": [_r4(v) for v in box], "center": [_r4(c[0]), _r4(c[1])]})
    ev = script.event_at(t) if t < script.duration else None
    hand = hand_position(sess, script.instances, t) if sess is not None else None
    helper = helper_position(sess, script.instances, t) if sess is not None else None
    wipe = script.wipe_at(t)
    return {
        "t": float(t),
        "products_present": sorted({i["class_id"] for i in instances}),
        "instances": instances,
        "zones": {k: sorted(set(v)) for k, v in zones.items()},
        "customer_present": sess is not None,
        "hand_present": sess is not None or wipe is not None,
        "hand_mode": hand[1] if hand is not None else None,
        "second_person": helper is not None,
        "staff_wiping": wipe is not None,
        "activity": ev.activity_id if ev is not None else -1,
        "activity_instance": ev.instance_id if ev is not None else -1,
        "scanner_flash": script.flash_at(t),
        "people": len(script.people_at(t)),
        "blur": script.blur_at(t) > 0,
    }
