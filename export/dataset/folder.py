"""A dataset folder (format version 1): labels.yaml, videos/<stem>.<ext>, annotations/<stem>.json,
optional splits.yaml and crops/. ``open_dataset`` reads it into items with normalised annotations.

Normalised means every event carries both ``activity`` and ``activity_id``, every instance both
``product`` and ``class_id`` (ids are positions in labels.yaml; a name wins over an id), and
``video_id``, ``duration_s``, ``fps_boxes`` and ``split`` are present."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .labels import DatasetError, LabelSet, load_labels

__all__ = ["Dataset", "DatasetError", "DatasetItem", "Layout", "open_dataset", "resolve_label", "scan_layout"]

DEFAULT_SPLIT = "train"
DEFAULT_FPS_BOXES = 5.0
VIDEOS, ANNOTATIONS, LABELS_FILE, SPLITS_FILE = "videos", "annotations", "labels.yaml", "splits.yaml"
# (event field, id field, LabelSet attribute, the annotation's own list of names, what labels.yaml calls it)
ACTIVITY_KEYS = ("activity", "activity_id", "activities", "activities", "activities")
OBJECT_KEYS = ("product", "class_id", "objects", "products", "objects")


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


@dataclass
class Layout:
    """What files a dataset folder holds, before anything is parsed."""
    root: Path
    videos: dict[str, list[Path]]        # stem -> video files (more than one is a problem)
    annotations: dict[str, Path]         # stem -> annotations/<stem>.json
    others: list[Path]                   # files in annotations/ that are not .json (ignored)
    missing_dirs: list[str]

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def scan_layout(root) -> Layout:
    root = Path(root)
    videos: dict[str, list[Path]] = {}
    annotations: dict[str, Path] = {}
    others, missing = [], []
    for sub in (VIDEOS, ANNOTATIONS):
        if not (root / sub).is_dir():
            missing.append(sub)
    for p in _files(root / VIDEOS):
        videos.setdefault(p.stem, []).append(p)
    for p in _files(root / ANNOTATIONS):
        if p.suffix.lower() == ".json":
            annotations[p.stem] = p
        else:
            others.append(p)
    return Layout(root, videos, annotations, others, missing)


def _files(d: Path) -> list[Path]:
    # hidden files (.DS_Store, editor swap files) are never data
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


def read_json(path: Path) -> tuple[object, str | None]:
    """(parsed value, None) or (None, one-line reason)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), None
    except json.JSONDecodeError as err:
        return None, f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot be read ({getattr(err, 'strerror', None) or err})"


def read_splits(path: Path, stems: set[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """splits.yaml -> ({stem: split}, [(field, problem), ...]); an absent file is no splits."""
    import yaml

    if not path.is_file():
        return {}, []
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return {}, [("", f"not valid YAML ({str(err).splitlines()[0]})")]
    if d is None:
        return {}, []
    if not isinstance(d, dict):
        return {}, [("", "must map split names to lists of stems, e.g. {train: [a, b], test: [c]}")]
    out: dict[str, str] = {}
    problems = []
    for name, members in d.items():
        if not isinstance(name, str) or not name.strip():
            problems.append((str(name), "a split name must be a non-empty string"))
            continue
        if not isinstance(members, list):
            problems.append((name, "must be a list of stems"))
            continue
        for i, stem in enumerate(members):
            if not isinstance(stem, str) or stem not in stems:
                problems.append((f"{name}[{i}]", f"{stem!r} is no stem of this dataset (videos/<stem>.*, "
                                                 f"annotations/<stem>.json)"))
            elif stem in out:
                problems.append((f"{name}[{i}]", f"{stem!r} is also in split {out[stem]!r}"))
            else:
                out[stem] = name
    return out, problems


def resolve_label(entry: dict, keys: tuple, labels: LabelSet, ann: dict) -> tuple[str, int] | str:
    """(name, id) of an event's activity or an instance's object class, or a one-line problem
    starting with the field it is about. A name wins; an id is read through the annotation's own
    list of names when it has one (the generator writes ``activities``/``products``), else as a
    position in labels.yaml."""
    name_key, id_key, attr, own_key, yaml_key = keys
    names = getattr(labels, attr)
    name = entry.get(name_key)
    if name is not None:
        if isinstance(name, str) and name in names:
            return name, names.index(name)
        return f"{name_key}: {name!r} not in labels.yaml {yaml_key}"
    i = entry.get(id_key)
    if i is None:
        return f"{name_key}: missing (give {name_key} or {id_key})"
    if isinstance(i, bool) or not isinstance(i, int):
        return f"{id_key}: {i!r} is not an integer"
    own = ann.get(own_key)
    if isinstance(own, list) and own:
        if not 0 <= i < len(own):
            return f"{id_key}: {i} out of range (the file's own {own_key} has {len(own)})"
        if own[i] not in names:
            return f"{id_key}: {i} is {own[i]!r} in the file's own {own_key}, not in labels.yaml {yaml_key}"
        return own[i], names.index(own[i])
    if not 0 <= i < len(names):
        return f"{id_key}: {i} out of range (labels.yaml has {len(names)} {yaml_key})"
    return names[i], i


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
    out["events"] = []
    for e in ann.get("events") or []:
        name, i = resolve_label(e, ACTIVITY_KEYS, labels, ann)
        out["events"].append({**e, "activity": name, "activity_id": i, "start": float(e["start"]),
                              "end": float(e["end"])})
    out["events"].sort(key=lambda e: (e["start"], e["end"]))
    out["instances"] = []
    for inst in ann.get("instances") or []:
        name, i = resolve_label(inst, OBJECT_KEYS, labels, ann)
        out["instances"].append({**inst, "product": name, "class_id": i})
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


def item_split(stem: str, ann: dict, splits: dict[str, str]) -> str:
    """splits.yaml's split for the stem, else the annotation's "split" field, else "train"."""
    return splits.get(stem) or ann.get("split") or DEFAULT_SPLIT


def open_dataset(root) -> Dataset:
    """Read a dataset folder after the structural checks of ``lvm-data check --no-decode`` (no video is
    decoded). Any error -> DatasetError naming the first and how many; warnings (a video without
    annotations) are not errors: such a video is left out."""
    from .check import check_dataset

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
