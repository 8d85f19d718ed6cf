"""Every problem of a dataset folder at once, one line each (``lvm-data check``). Never raises: a
file that cannot be read is a problem line like any other."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .layout import (ACTIVITY_KEYS, ANNOTATIONS, LABELS_FILE, OBJECT_KEYS, SPLITS_FILE, VIDEOS, Layout,
                     read_json, read_splits, resolve_label, scan_layout)
from .labels import LabelSet, read_labels_file

# Annotation duration_s and the video's own (frame count / fps) may differ by this much before it is
# a problem: container frame counts are estimates, and people round durations.
DURATION_SLACK_S, DURATION_SLACK_FRACTION = 1.0, 0.02


@dataclass(frozen=True)
class Problem:
    file: str            # relative to the dataset folder
    field: str           # e.g. "events[2].end"; "" when about the whole file
    message: str
    level: str = "error"   # "error": the dataset cannot be used as is; "warning": something is left out

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}: " if self.field else f"{self.file}: "
        return where + self.message + (" (warning)" if self.level == "warning" else "")


@dataclass
class VideoInfo:
    fps: float | None
    frames: int | None

    @property
    def duration(self) -> float | None:
        return self.frames / self.fps if self.fps and self.frames else None


def check_dataset(root, *, decode: bool = True, full: bool = False) -> list[Problem]:
    """Every problem of the dataset folder ``root``. ``decode``: open every video with the runtime's
    file source (header, frame count, first frame) and compare its length with the annotation;
    ``full``: also decode every frame (finds truncated or damaged files; slow for long footage)."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(str(root), "", "no such folder" if not root.exists() else "not a folder")]
    out: list[Problem] = []
    labels, label_probs = read_labels_file(root / LABELS_FILE)
    out += [Problem(LABELS_FILE, f, m) for f, m in label_probs]
    layout = scan_layout(root)
    out += [Problem(f"{d}/", "", "missing folder") for d in layout.missing_dirs]
    if not layout.missing_dirs and not layout.annotations:
        out.append(Problem(f"{ANNOTATIONS}/", "", "no annotation files (<stem>.json)"))
    out += [Problem(layout.rel(p), "", "not a .json file: ignored", "warning") for p in layout.others]
    for stem, files in sorted(layout.videos.items()):
        if len(files) > 1:
            out.append(Problem(layout.rel(files[1]), "", f"a second video for stem {stem!r} "
                               f"(also {layout.rel(files[0])}): one video per stem"))
        if stem not in layout.annotations:
            out.append(Problem(layout.rel(files[0]), "", f"no {ANNOTATIONS}/{stem}.json: left out", "warning"))
    _, split_probs = read_splits(root / SPLITS_FILE, set(layout.annotations) | set(layout.videos))
    out += [Problem(SPLITS_FILE, f, m) for f, m in split_probs]
    for stem, path in sorted(layout.annotations.items()):
        out += _check_item(layout, stem, path, labels, decode, full)
    return out


def _check_item(layout: Layout, stem: str, path: Path, labels: LabelSet | None, decode: bool,
                full: bool) -> list[Problem]:
    rel = layout.rel(path)
    ann, err = read_json(path)
    if err:
        return [Problem(rel, "", err)]
    if not isinstance(ann, dict):
        return [Problem(rel, "", f"must be a JSON object, got {type(ann).__name__}")]
    out = [Problem(rel, f, m) for f, m in annotation_problems(ann, labels, layout.root)]
    videos = layout.videos.get(stem)
    if not videos:
        out.append(Problem(rel, "", f"no video {VIDEOS}/{stem}.* for it"))
    elif decode:
        info, err = probe_video(videos[0], layout.rel(videos[0]), full)
        if err:
            out.append(Problem(layout.rel(videos[0]), "", err))
        else:
            out += [Problem(rel, f, m) for f, m in length_problems(ann, info, layout.rel(videos[0]))]
    return out


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def annotation_problems(ann: dict, labels: LabelSet | None, root: Path) -> list[tuple[str, str]]:
    """(field, message) for everything wrong inside one annotation dict (no video needed).
    ``labels`` None (labels.yaml is broken): names and ids are not checked."""
    out = []
    dur = ann.get("duration_s")
    if dur is not None and not (_num(dur) and dur > 0):
        out.append(("duration_s", f"{dur!r} is not a positive number of seconds"))
        dur = None
    fb = ann.get("fps_boxes")
    if fb is not None and not (_num(fb) and fb > 0):
        out.append(("fps_boxes", f"{fb!r} is not a positive rate"))
    for key in ("video_id", "split"):
        v = ann.get(key)
        if v is not None and not (isinstance(v, str) and v.strip()):
            out.append((key, f"{v!r} is not a non-empty string"))
    out_ids, inst_probs = _instance_problems(ann, labels, root)
    out += inst_probs
    out += _event_problems(ann, labels, out_ids, dur)
    if "negatives" in ann:  # annotation version 3: what did not happen (a false alert's claim)
        out += _event_problems(ann, labels, out_ids, dur, key="negatives")
    out += _box_problems(ann, out_ids, dur)
    out += _pictureless(ann)
    return out


def _pictureless(ann) -> list[tuple[str, str]]:
    """Instances with events but no picture: an activity query shows the instance's picture (its
    crop file, else cut from the video at its largest box), so such an instance cannot be asked about."""
    events, insts, boxes = ann.get("events"), ann.get("instances"), ann.get("boxes", {})
    if not (isinstance(events, list) and isinstance(insts, list) and isinstance(boxes, dict)):
        return []
    asked = {e.get("instance_id") for e in events if isinstance(e, dict)}
    return [(f"instances[{n}]", f"instance {inst['instance_id']} has events but neither boxes nor a crop file: "
                                f"nothing to show a query about it")
            for n, inst in enumerate(insts)
            if isinstance(inst, dict) and inst.get("instance_id") in asked and not inst.get("crop")
            and not boxes.get(str(inst.get("instance_id")))]


def _instance_problems(ann, labels, root: Path) -> tuple[set[int] | None, list[tuple[str, str]]]:
    """(the instance ids, problems); ids None when the instances list itself is unusable."""
    insts = ann.get("instances")
    if not isinstance(insts, list):
        return None, [("instances", "missing or not a list (one entry per object instance; may be empty)")]
    out, first = [], {}
    for n, inst in enumerate(insts):
        f = f"instances[{n}]"
        if not isinstance(inst, dict):
            out.append((f, "not an object"))
            continue
        iid = inst.get("instance_id")
        if not isinstance(iid, int) or isinstance(iid, bool):
            out.append((f"{f}.instance_id", f"{iid!r} is not an integer"))
        elif iid in first:
            out.append((f"{f}.instance_id", f"{iid} already used by instances[{first[iid]}]"))
        else:
            first[iid] = n
        if labels is not None:
            r = resolve_label(inst, OBJECT_KEYS, labels, ann)
            if isinstance(r, str):
                out.append((f"{f}.{r.split(': ', 1)[0]}", r.split(": ", 1)[1]))
        out += _checkout_problems(inst, f)
        crop = inst.get("crop")
        if crop is not None:
            msg = crop_problem(root, crop)
            if msg:
                out.append((f"{f}.crop", msg))
    return set(first), out


def _checkout_problems(inst: dict, f: str) -> list[tuple[str, str]]:
    """The optional per-item checkout fields (annotation version 2): scanned, transaction, shrink."""
    out = []
    if "scanned" in inst and not isinstance(inst["scanned"], bool):
        out.append((f"{f}.scanned", f"{inst['scanned']!r} is not true or false"))
    tr = inst.get("transaction")
    if tr is not None and (not isinstance(tr, int) or isinstance(tr, bool)):
        out.append((f"{f}.transaction", f"{tr!r} is not an integer (the customer session's id)"))
    sh = inst.get("shrink")
    if sh is not None and not (isinstance(sh, str) and sh.strip()):
        out.append((f"{f}.shrink", f"{sh!r} is not null or a behaviour name (e.g. bagged_unscanned)"))
    return out


def crop_problem(root: Path, crop) -> str | None:
    if not isinstance(crop, str) or not crop.strip():
        return f"{crop!r} is not a file path (relative to the dataset folder)"
    p = root / crop
    if not p.is_file():
        return f"{crop}: no such file"
    import cv2

    try:
        ok = cv2.imread(str(p)) is not None
    except cv2.error:
        ok = False
    return None if ok else f"{crop}: cannot be decoded as an image"


def _event_problems(ann, labels, ids: set[int] | None, dur, key: str = "events") -> list[tuple[str, str]]:
    """``events`` (or ``negatives``, the same fields) of an annotation."""
    events = ann.get(key)
    if not isinstance(events, list):
        return [(key, "missing or not a list (one entry per activity; may be empty)")]
    out = []
    for n, e in enumerate(events):
        f = f"{key}[{n}]"
        if not isinstance(e, dict):
            out.append((f, "not an object"))
            continue
        if labels is not None:
            r = resolve_label(e, ACTIVITY_KEYS, labels, ann)
            if isinstance(r, str):
                out.append((f"{f}.{r.split(': ', 1)[0]}", r.split(": ", 1)[1]))
        iid = e.get("instance_id")
        if not isinstance(iid, int) or isinstance(iid, bool):
            out.append((f"{f}.instance_id", f"{iid!r} is not an integer"))
        elif ids is not None and iid not in ids:
            out.append((f"{f}.instance_id", f"{iid} is not an instance in instances"))
        s, t = e.get("start"), e.get("end")
        bad = [(k, v) for k, v in (("start", s), ("end", t)) if not _num(v)]
        for k, v in bad:
            out.append((f"{f}.{k}", f"{v!r} is not a number of seconds"))
        if bad:
            continue
        if s < 0:
            out.append((f"{f}.start", f"{s} is before the video's start (0)"))
        if t <= s:
            out.append((f"{f}.end", f"{t} <= start {s}"))
        elif dur is not None and t > dur:
            out.append((f"{f}.end", f"{t} past the video's end (duration_s {dur})"))
    return out


def _box_problems(ann, ids: set[int] | None, dur) -> list[tuple[str, str]]:
    boxes = ann.get("boxes", {})
    if not isinstance(boxes, dict):
        return [("boxes", "not an object {instance_id: [[t, x1, y1, x2, y2], ...]}")]
    out = []
    for key, rows in boxes.items():
        f = f"boxes.{key}"
        if not key.lstrip("-").isdigit():
            out.append((f, f"key {key!r} is not an instance id"))
            continue
        if ids is not None and int(key) not in ids:
            out.append((f, f"boxes of an unknown instance {key} (not in instances)"))
        if not isinstance(rows, list):
            out.append((f, "not a list of [t, x1, y1, x2, y2] rows"))
            continue
        # one line per track: a systematically wrong track would otherwise print thousands
        bad = [(i, m) for i, row in enumerate(rows) if (m := _row_problem(row, dur))]
        if bad:
            i, m = bad[0]
            more = f" (and {len(bad) - 1} more rows of this track)" if len(bad) > 1 else ""
            out.append((f"{f}[{i}]", m + more))
    return out


def _row_problem(row, dur) -> str | None:
    if not isinstance(row, list) or len(row) != 5 or not all(_num(v) for v in row):
        return f"{row!r} is not [t, x1, y1, x2, y2] (5 numbers)"
    t, x1, y1, x2, y2 = row
    for name, v in (("x1", x1), ("y1", y1), ("x2", x2), ("y2", y2)):
        if not 0.0 <= v <= 1.0:
            return f"{name} {v} outside [0, 1] (boxes are normalised to the frame)"
    if x2 <= x1:
        return f"x2 {x2} <= x1 {x1}"
    if y2 <= y1:
        return f"y2 {y2} <= y1 {y1}"
    if t < 0:
        return f"t {t} is before the video's start (0)"
    if dur is not None and t >= dur:
        return f"t {t} past the video's end (duration_s {dur})"
    return None


def probe_video(path: Path, label: str, full: bool = False) -> tuple[VideoInfo | None, str | None]:
    """Open a video with the runtime's own file source (what training and the kiosk decode with):
    header, frame count, first frame; ``full`` decodes every frame and uses the count it found."""
    from edge_runtime.sources.base import SourceError
    from edge_runtime.sources.files import FileSource

    try:
        src = FileSource(str(path), label=label, target_fps=None if not full else 0.5)
    except SourceError as err:
        return None, str(err).removeprefix(f"{label}: ")
    except Exception as err:  # noqa: BLE001 - a decoder failing on odd input is a problem line, not a crash
        return None, f"cannot be decoded ({type(err).__name__}: {err})"
    with src:
        info = VideoInfo(src.fps, src.frame_count_hint)
        if full:
            for _ in src:
                pass
            if src.end_problem:
                return info, src.end_problem
            if src.position is not None and src.fps:  # the last frame decoded, not the last one sampled
                info.frames = int(round(src.position * src.fps)) + 1
    return info, None


def length_problems(ann: dict, info: VideoInfo, video_rel: str) -> list[tuple[str, str]]:
    """The annotation against the decoded video: duration_s vs frame count / fps, and nothing
    annotated after the video ends."""
    vd = info.duration
    dur = ann.get("duration_s")
    if vd is None:
        if dur is None:
            return [("duration_s", f"missing, and {video_rel} gives no frame rate or frame count to "
                                   f"derive it from")]
        return []
    what = f"{video_rel}: {info.frames} frames at {info.fps:g} fps = {vd:.2f} s"
    out = []
    if _num(dur) and dur > 0 and abs(dur - vd) > max(DURATION_SLACK_S, DURATION_SLACK_FRACTION * vd):
        out.append(("duration_s", f"{dur} s but the video is {'shorter' if vd < dur else 'longer'} ({what})"))
    slack = max(2.0 / info.fps, 0.01 * vd)
    last, where = latest_time(ann)
    if last is not None and last > vd + slack and not (_num(dur) and last > dur):  # else already reported
        out.append((where, f"{last} past the video's end ({what})"))
    return out


def latest_time(ann: dict) -> tuple[float | None, str]:
    """The latest annotated time (event end or box time) and the field holding it."""
    best, where = None, ""
    for n, e in enumerate(ann.get("events") if isinstance(ann.get("events"), list) else []):
        if isinstance(e, dict) and _num(e.get("end")) and (best is None or e["end"] > best):
            best, where = e["end"], f"events[{n}].end"
    boxes = ann.get("boxes") if isinstance(ann.get("boxes"), dict) else {}
    for key, rows in boxes.items():
        for i, row in enumerate(rows if isinstance(rows, list) else []):
            if isinstance(row, list) and row and _num(row[0]) and (best is None or row[0] > best):
                best, where = row[0], f"boxes.{key}[{i}]"
    return best, where
