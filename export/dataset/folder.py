"""A dataset folder (format version 1): labels.yaml, videos/<stem>.<ext>, annotations/<stem>.json,
optional splits.yaml and crops/. ``open_dataset`` reads it into items with normalised annotations.

Normalised means every event carries both ``activity`` and ``activity_id``, every instance both
``product`` and ``class_id`` (ids are positions in labels.yaml; a name wins over an id) and
``scanned``, ``transaction`` and ``shrink`` (``instance_checkout``), and ``video_id``, ``duration_s``,
``fps_boxes`` and ``split`` are present."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .check import check_dataset
from .labels import DatasetError, LabelSet, load_labels
from .layout import (ACTIVITY_KEYS, ANNOTATIONS, LABELS_FILE, OBJECT_KEYS, SPLITS_FILE, VIDEOS, read_json, read_splits,
                     resolve_label, scan_layout)

# the layout's names are the folder format's public names too (importers and renderers write by them)
__all__ = ["ANNOTATIONS", "Dataset", "DatasetError", "DatasetItem", "LABELS_FILE", "SPLITS_FILE", "VIDEOS",
           "open_dataset", "video_header"]

DEFAULT_SPLIT = "train"
DEFAULT_FPS_BOXES = 5.0


@dataclass(frozen=True)
class DatasetItem:
    stem: str
    video: Path
    annotation_path: Path
    annotations: dict
    split: str
    crop_files: dict[int, Path] = field(default_factory=dict)


@dataclass
class Dataset:
    root: Path
    labels: LabelSet
    items: list[DatasetItem]

    def split(self, name: str) -> list[DatasetItem]:
        """The items of one split, in stem order; DatasetError naming the splits there are if none."""
        items = [it for it in self.items if it.split == name]
        if not items:
            counts: dict[str, int] = {}
            for it in self.items:
                counts[it.split] = counts.get(it.split, 0) + 1
            have = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())) or "none"
            raise DatasetError(f"{self.root}: no videos in split {name!r} (splits here: {have})")
        return items


def video_header(path: Path) -> tuple[float | None, int | None]:
    """(fps, frame count) from the container, None where it does not say; (None, None) if unopenable."""
    from edge_runtime.sources.files import quiet_decoder_logs

    quiet_decoder_logs()
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None, None
        fps, count = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else None
    count = int(count) if math.isfinite(count) and count > 0 else None
    return fps, count


def normalise(ann: dict, labels: LabelSet, stem: str, split: str, video: Path) -> dict:
    """A checked annotation dict -> its normalised copy (see the module doc)."""
    out = dict(ann)
    out["activities"], out["products"] = list(labels.activities), list(labels.objects)
    out["events"] = _labelled(ann.get("events") or [], labels, ann)
    if "negatives" in ann:  # annotation version 3: the same fields, what is known not to have happened
        out["negatives"] = _labelled(ann["negatives"], labels, ann)
    out["instances"] = []
    for inst in ann.get("instances") or []:
        name, i = resolve_label(inst, OBJECT_KEYS, labels, ann)
        out["instances"].append(instance_checkout({**inst, "product": name, "class_id": i}, out["events"], labels))
    out["boxes"] = {str(int(k)): [[float(v) for v in row] for row in rows]
                    for k, rows in (ann.get("boxes") or {}).items()}
    out.setdefault("format", "lvm-edge/checkout-rest")
    out.setdefault("version", 1)
    out.setdefault("sessions", [])
    out.setdefault("scanner_flashes", [])
    out["video_id"] = ann.get("video_id") or stem
    out["fps_boxes"] = float(ann.get("fps_boxes") or DEFAULT_FPS_BOXES)
    out["split"] = split
    if ann.get("duration_s") is None:
        fps, count = video_header(video)
        if not fps or not count:
            raise DatasetError(f"{video}: its header gives no frame rate or frame count, so the duration is "
                               f"unknown: give duration_s in annotations/{stem}.json")
        out["duration_s"] = count / fps
    out["duration_s"] = float(out["duration_s"])
    return out


def _labelled(events: list[dict], labels: LabelSet, ann: dict) -> list[dict]:
    """Events with both activity and activity_id, in time order."""
    out = []
    for e in events:
        name, i = resolve_label(e, ACTIVITY_KEYS, labels, ann)
        out.append({**e, "activity": name, "activity_id": i, "start": float(e["start"]), "end": float(e["end"])})
    return sorted(out, key=lambda e: (e["start"], e["end"]))


def instance_checkout(inst: dict, events: list[dict], labels: LabelSet) -> dict:
    """The instance with ``scanned``, ``transaction`` and ``shrink`` filled in where the file does not
    give them (files before annotation version 2, and own footage): scanned = it has an event of the
    activity named scan (None when the labels have no scan), transaction = its ``session`` (None when
    not given), shrink = None (no scan-avoidance behaviour recorded)."""
    if "scanned" not in inst:
        scan = labels.activities.index("scan") if "scan" in labels.activities else None
        inst["scanned"] = None if scan is None else any(
            e["activity_id"] == scan and e.get("instance_id") == inst.get("instance_id") for e in events)
    inst.setdefault("transaction", inst.get("session"))
    inst.setdefault("shrink", None)
    return inst


def item_split(stem: str, ann: dict, splits: dict[str, str]) -> str:
    """splits.yaml's split for the stem, else the annotation's "split" field, else "train"."""
    return splits.get(stem) or ann.get("split") or DEFAULT_SPLIT


def open_dataset(root) -> Dataset:
    """Read a dataset folder after the structural checks of ``lvm-data check --no-decode`` (no video is
    decoded). Any error -> DatasetError naming the first and how many; warnings (a video without
    annotations) are not errors: such a video is left out."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    errors = [p for p in check_dataset(root, decode=False) if p.level == "error"]
    if errors:
        n = len(errors)
        raise DatasetError(f"{root}: {n} problem{'s' if n > 1 else ''} (first: {errors[0]}); "
                           f"run lvm-data check {root}")
    labels = load_labels(root / LABELS_FILE)
    layout = scan_layout(root)
    splits, _ = read_splits(root / SPLITS_FILE, set(layout.annotations) | set(layout.videos))
    items = []
    for stem, ann_path in sorted(layout.annotations.items()):
        ann, _ = read_json(ann_path)
        video = layout.videos[stem][0]
        split = item_split(stem, ann, splits)
        crops = {int(i["instance_id"]): root / i["crop"] for i in ann.get("instances") or [] if i.get("crop")}
        items.append(DatasetItem(stem=stem, video=video, annotation_path=ann_path,
                                 annotations=normalise(ann, labels, stem, split, video), split=split,
                                 crop_files=crops))
    return Dataset(root=root, labels=labels, items=items)
