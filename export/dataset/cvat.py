"""Import a CVAT "CVAT for video 1.1" XML export of one video into a dataset folder.

    from export.dataset.cvat import import_cvat
    import_cvat("annotations.xml", "cam1.mp4", "data/shop")   # -> data/shop/annotations/cam1.json

A track is an object instance (instance_id = track id, product = track label). Its boxes are turned
into normalised 5 fps rows, linear between the boxes CVAT wrote, held after the last one, and absent
while the track is ``outside``. Activities come from a box attribute named ``activity`` (or
``action``): each run of one non-empty value is an event on that track. A ``<tag>`` whose attribute
``track_id`` (or ``track``, ``instance``, ``instance_id``) names a track marks its label as going on
for that frame; consecutive frames merge into one event. cvat_xml.py reads the XML; docs/cvat-import.md
has the details.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from .cvat_xml import CvatBox, CvatError, CvatTrack, CvatVideo, parse_cvat
from .folder import ANNOTATIONS, LABELS_FILE, VIDEOS, video_header
from .labels import LabelSet, read_labels_file

FPS_BOXES = 5.0


def _spans(track: CvatTrack, end_frame: int) -> list[tuple[int, int, list[CvatBox]]]:
    """(first frame, first frame after, visible boxes) of each span the track is on screen; a
    track whose last box is not ``outside`` stays until the end of the task, as CVAT shows it."""
    out, cur = [], []
    for b in track.boxes:
        if b.outside:
            if cur:  # an "outside" mark past the video's end ends the span where the video does
                out.append((cur[0].frame, min(b.frame, max(end_frame, cur[-1].frame + 1)), cur))
                cur = []
        else:
            cur.append(b)
    if cur:
        out.append((cur[0].frame, max(end_frame, cur[-1].frame + 1), cur))
    return out


def _box_at(knots: list[CvatBox], x: float) -> tuple[float, ...]:
    """The box at (fractional) frame ``x``: linear between the two knots around it, the last knot's after it."""
    prev = knots[0]
    for k in knots[1:]:
        if k.frame > x:
            a = (x - prev.frame) / (k.frame - prev.frame)
            return tuple(p + a * (q - p) for p, q in zip(prev.xyxy, k.xyxy))
        prev = k
    return prev.xyxy


def _norm_row(t: float, xyxy, size: tuple[int, int]) -> list[float] | None:
    w, h = size
    x1, x2 = sorted((min(max(xyxy[0] / w, 0.0), 1.0), min(max(xyxy[2] / w, 0.0), 1.0)))
    y1, y2 = sorted((min(max(xyxy[1] / h, 0.0), 1.0), min(max(xyxy[3] / h, 0.0), 1.0)))
    if x2 <= x1 or y2 <= y1:
        return None  # entirely off-frame or degenerate
    return [round(t, 4)] + [round(v, 5) for v in (x1, y1, x2, y2)]


def cvat_annotations(cv: CvatVideo, *, fps: float, n_frames: int, frame_size: tuple[int, int],
                     video_id: str) -> dict:
    """The checkout-rest annotation dict (names, not ids) of a parsed export."""
    step = cv.frame_step
    end_frame = n_frames if cv.stop_frame is None else min(n_frames, cv.stop_frame + 1)
    sec = lambda f: round(f / fps, 4)
    instances, boxes, runs = [], {}, []
    for tr in sorted(cv.tracks, key=lambda t: t.track_id):
        rows, spans = [], _spans(tr, end_frame)
        for f0, f1, knots in spans:
            k0, k1 = math.ceil(f0 * FPS_BOXES / fps - 1e-9), math.ceil(f1 * FPS_BOXES / fps - 1e-9)
            times = [k / FPS_BOXES for k in range(k0, k1)] or [f0 / fps]  # a span shorter than a box period keeps one
            rows += [r for t in times if (r := _norm_row(t, _box_at(knots, t * fps), frame_size))]
            # an event per run of one activity value; values hold from a box until the next box
            for i, b in enumerate(knots):
                if b.activity and (i == 0 or knots[i - 1].activity != b.activity):
                    nxt = next((k.frame for k in knots[i + 1:] if k.activity != b.activity), f1)
                    runs.append((tr.track_id, b.activity, b.frame, nxt))
        inst = {"instance_id": tr.track_id, "product": tr.label}
        if spans:
            inst.update(appear=sec(spans[0][0]), vanish=sec(spans[-1][1]))
        instances.append(inst)
        if rows:
            boxes[str(tr.track_id)] = rows
    for frame, label, ref in cv.tags:
        if ref is not None:
            runs.append((ref, label, frame, max(frame + 1, min(frame + step, n_frames))))
    events = [{"activity": a, "instance_id": i, "start": sec(s), "end": sec(e)} for i, a, s, e in _merge(runs)]
    events.sort(key=lambda e: (e["start"], e["end"], e["instance_id"]))
    return {"format": "lvm-edge/checkout-rest", "version": 1, "video_id": video_id,
            "duration_s": round(n_frames / fps, 4), "fps_boxes": FPS_BOXES,
            "instances": instances, "events": events, "boxes": boxes,
            "source": {"from": "cvat-video-1.1", "task": cv.task_name, "video_fps": fps,
                       "frame_size": list(frame_size),
                       "tags_without_track": sum(1 for _, _, ref in cv.tags if ref is None)}}


def _merge(runs: list[tuple[int, str, int, int]]) -> list[tuple[int, str, int, int]]:
    """Runs of the same activity on the same track that touch or overlap become one."""
    out: list[list] = []
    for iid, act, s, e in sorted(runs):
        if out and out[-1][0] == iid and out[-1][1] == act and s <= out[-1][3]:
            out[-1][3] = max(out[-1][3], e)
        else:
            out.append([iid, act, s, e])
    return [tuple(r) for r in out]


def found_labels(cv: CvatVideo) -> LabelSet:
    """Object classes = track labels, activities = activity values and track-linked tag labels;
    in the order the XML declares them, then in order of appearance."""
    objects = _ordered({t.label for t in cv.tracks}, cv.label_order)
    if cv.activity_order:  # a value the task does not declare is a typo ("stnad"), not a new activity
        for t in cv.tracks:
            bad = next((b for b in t.boxes if b.activity and b.activity not in cv.activity_order), None)
            if bad is not None:
                raise CvatError(f"track {t.track_id} box at frame {bad.frame}: activity '{bad.activity}' is not "
                                f"among the values the task declares ({', '.join(cv.activity_order)})")
    acts = {b.activity for t in cv.tracks for b in t.boxes if b.activity and not b.outside}
    acts |= {label for _, label, ref in cv.tags if ref is not None}
    appear = [b.activity for t in cv.tracks for b in t.boxes] + [lbl for _, lbl, _ in cv.tags]
    return LabelSet(tuple(_ordered(acts, cv.activity_order + cv.label_order + appear)), tuple(objects))


def _ordered(names: set[str], order: list[str]) -> list[str]:
    rank = {n: i for i, n in reversed(list(enumerate(order)))}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def import_cvat(xml_path, video_path, dataset_dir, *, labels_yaml=None) -> Path:
    """Add one CVAT-annotated video to a dataset folder: videos/<name> (a hard link where the
    filesystem allows, else a copy), annotations/<stem>.json, and labels.yaml when the folder has
    none (from ``labels_yaml`` if given, else from the labels found). Every label found must be in
    the labels that apply. Nothing is written when anything is wrong (CvatError, one line).
    -> the annotation file."""
    xml_path, video_path, root = Path(xml_path), Path(video_path), Path(dataset_dir)
    cv = parse_cvat(xml_path)
    if not video_path.is_file():
        raise CvatError(f"{video_path}: video not found")
    fps, n_frames, size = _probe(video_path)
    frame_size = cv.frame_size or size
    _check_video_fits(cv, xml_path, video_path, n_frames, size)
    last = max([b.frame + 1 for t in cv.tracks for b in t.boxes if not b.outside] + [f + 1 for f, _, _ in cv.tags],
               default=0)
    n_frames = max(n_frames, last)  # the header's frame count can be a few frames short of the real one
    ann = cvat_annotations(cv, fps=fps, n_frames=n_frames, frame_size=frame_size, video_id=video_path.stem)
    try:
        found = found_labels(cv)
    except CvatError as err:  # named by the file, as the parser's own errors are
        raise CvatError(f"{xml_path}: {err}") from None
    labels = _labels_to_use(root, labels_yaml, found, xml_path)

    dest = root / VIDEOS / video_path.name
    _check_video_slot(root, video_path, dest)
    for sub in (VIDEOS, ANNOTATIONS):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _place_video(video_path, dest)
    from edge_runtime.atomic_write import atomic_write_bytes

    ann_path = root / ANNOTATIONS / f"{video_path.stem}.json"
    atomic_write_bytes(ann_path, (json.dumps(ann, indent=1) + "\n").encode())
    if not (root / LABELS_FILE).exists():
        atomic_write_bytes(root / LABELS_FILE, labels.to_yaml().encode())
    return ann_path


def _probe(video: Path) -> tuple[float, int, tuple[int, int] | None]:
    fps, count = video_header(video)
    if fps is None or count is None:
        raise CvatError(f"{video}: OpenCV cannot read its frame rate and frame count (not a video, or a "
                        f"container without them; re-encode it to mp4)")
    import cv2

    cap = cv2.VideoCapture(str(video))
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return fps, count, ((w, h) if w > 0 and h > 0 else None)


def _check_video_fits(cv: CvatVideo, xml_path: Path, video: Path, n_frames: int, size) -> None:
    if cv.frame_size is None and size is None:
        raise CvatError(f"{xml_path}: no <original_size> and {video} does not say its frame size")
    if cv.frame_size and size and abs(cv.frame_size[0] / cv.frame_size[1] - size[0] / size[1]) > 0.02:
        raise CvatError(f"{xml_path}: frames are {cv.frame_size[0]}x{cv.frame_size[1]} but {video} is "
                        f"{size[0]}x{size[1]}: is it the video this XML annotates?")
    slack = max(2, n_frames // 100)
    marks = [(f"track {t.track_id} has a box", b.frame) for t in cv.tracks for b in t.boxes if not b.outside]
    marks += [(f"tag '{label}' is", frame) for frame, label, _ in cv.tags]
    for what, frame in marks:
        if frame >= n_frames + slack:
            raise CvatError(f"{xml_path}: {what} at frame {frame} but {video} has {n_frames} frames: is it the "
                            f"video this XML annotates?")


def _labels_to_use(root: Path, labels_yaml, found: LabelSet, xml_path: Path) -> LabelSet:
    """The labels the import is checked against: the folder's labels.yaml, else ``labels_yaml``,
    else the labels found."""
    have = None
    for path in ([root / LABELS_FILE] if (root / LABELS_FILE).exists() else []) + \
            ([Path(labels_yaml)] if labels_yaml else []):
        labels, problems = read_labels_file(path)
        if labels is None:
            fld, msg = problems[0]
            raise CvatError(f"{path}: {fld + ': ' if fld else ''}{msg}")
        if have is not None and labels != have[1]:
            raise CvatError(f"{path}: differs from {have[0]}, which the dataset already has")
        have = have or (path, labels)
    if have is None:
        if not found.activities or not found.objects:
            what = "no activity (box attribute 'activity' or a tag naming a track)" if not found.activities \
                else "no track"
            raise CvatError(f"{xml_path}: {what} found, so there is no labels.yaml to make; "
                            f"give one with the names (labels_yaml)")
        return found
    path, labels = have
    for kind, names, known in (("activities", found.activities, labels.activities),
                               ("objects", found.objects, labels.objects)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CvatError(f"{xml_path}: {kind} not in {path}: {', '.join(map(repr, unknown))} "
                            f"(add them there, or fix the labels in CVAT)")
    return labels


def _check_video_slot(root: Path, video: Path, dest: Path) -> None:
    others = [p for p in (root / VIDEOS).iterdir() if p.stem == video.stem and p.name != dest.name] \
        if (root / VIDEOS).is_dir() else []
    if others:
        raise CvatError(f"{others[0]}: already holds a video named {video.stem!r}; rename {video.name}")
    if dest.exists() and not _same_file(video, dest):
        raise CvatError(f"{dest}: a different video with this name is already there; rename {video.name} "
                        f"or remove the old one")


def _same_file(a: Path, b: Path) -> bool:
    import filecmp

    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def _place_video(video: Path, dest: Path) -> None:
    if dest.exists():
        return  # the same bytes (checked)
    video = video.resolve()  # a symbolic link: link the video it names (a relative link would dangle there)
    try:
        os.link(video, dest)
    except OSError:  # another filesystem, or links not allowed there
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(video, tmp)
        os.replace(tmp, dest)
