"""The reading step of the CVAT import: a "CVAT for video 1.1" XML export as plain data (``parse_cvat`` ->
``CvatVideo``: its tracks with their boxes, its tags, the task's frame size, frame range and label
order), every malformed or foreign export refused as a ``CvatError`` naming the file and what is
wrong. Apart from cvat.py, which turns that data into an annotation file and places the video, so
what the XML says and what the dataset gets from it can be read one at a time."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .labels import DatasetError

FORMAT_VERSION = "1.1"
ACTIVITY_ATTRS = ("activity", "action")                     # box attribute names, first found wins
TRACK_ATTRS = ("track_id", "track", "instance_id", "instance")  # tag attribute naming a track
NO_ACTIVITY = {"", "none", "null", "-", "__undefined__"}    # attribute values that mean "nothing going on"


class CvatError(DatasetError):
    """A CVAT export (or its video) that cannot be imported; one line naming the file and the reason."""


@dataclass(frozen=True)
class CvatBox:
    frame: int
    outside: bool
    xyxy: tuple[float, float, float, float]   # pixels, axis-aligned (a rotated box's enclosing box)
    activity: str                            # "" when none


@dataclass
class CvatTrack:
    track_id: int
    label: str
    boxes: list[CvatBox]


@dataclass
class CvatVideo:
    """What the XML says about one video (frame numbers are the video's own)."""
    tracks: list[CvatTrack]
    tags: list[tuple[int, str, int | None]]   # (frame, label, track id or None)
    frame_size: tuple[int, int] | None        # original_size (width, height)
    stop_frame: int | None
    frame_step: int
    label_order: list[str] = field(default_factory=list)     # meta <labels> order
    activity_order: list[str] = field(default_factory=list)  # declared values of the activity attribute
    task_name: str = ""


def parse_cvat(xml_path) -> CvatVideo:
    """Read a CVAT for video 1.1 export; CvatError (one line) for anything else."""
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise CvatError(f"{xml_path}: no such file")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise CvatError(f"{xml_path}: not valid XML ({err})") from None
    if root.tag != "annotations":
        raise CvatError(f"{xml_path}: root element <{root.tag}>, not <annotations>: not a CVAT XML export")
    version = (root.findtext("version") or "").strip()
    if version != FORMAT_VERSION:
        raise CvatError(f"{xml_path}: CVAT XML version {version or '(none)'}; this importer reads "
                        f"'CVAT for video {FORMAT_VERSION}' (export the task again in that format)")
    meta = root.find("meta")
    if meta is not None and meta.find("project") is not None:
        raise CvatError(f"{xml_path}: a project export (several videos); export each task as 'CVAT for video 1.1'")
    if root.find("image") is not None:
        raise CvatError(f"{xml_path}: a 'CVAT for images' export (<image> elements); export the task as "
                        f"'CVAT for video 1.1'")
    task = None if meta is None else (meta.find("task") if meta.find("task") is not None else meta.find("job"))
    out = CvatVideo(tracks=[], tags=[], frame_size=None, stop_frame=None, frame_step=1)
    if task is not None:
        _read_meta(task, out, xml_path)
    seen: dict[int, str] = {}
    for el in root.iter("track"):
        track = _read_track(el, xml_path)
        if track.track_id in seen:
            raise CvatError(f"{xml_path}: track id {track.track_id} appears twice")
        seen[track.track_id] = track.label
        out.tracks.append(track)
    for el in root.iter("tag"):
        out.tags.append(_read_tag(el, xml_path, seen))
    return out


def _read_meta(task: ET.Element, out: CvatVideo, xml_path: Path) -> None:
    out.task_name = (task.findtext("name") or "").strip()
    size = task.find("original_size")
    if size is not None:
        w, h = _int(size.findtext("width"), xml_path, "original_size/width"), \
            _int(size.findtext("height"), xml_path, "original_size/height")
        if w <= 0 or h <= 0:
            raise CvatError(f"{xml_path}: original_size {w}x{h} is not a frame size")
        out.frame_size = (w, h)
    if (task.findtext("stop_frame") or "").strip():
        out.stop_frame = _int(task.findtext("stop_frame"), xml_path, "stop_frame")
    step = (task.findtext("frame_filter") or "").strip()
    if step.startswith("step="):
        out.frame_step = max(1, _int(step[5:], xml_path, "frame_filter"))
    for label in task.iter("label"):
        name = (label.findtext("name") or "").strip()
        if name and name not in out.label_order:
            out.label_order.append(name)
        for attr in label.iter("attribute"):
            if (attr.findtext("name") or "").strip().lower() in ACTIVITY_ATTRS:
                for v in (attr.findtext("values") or "").splitlines():
                    v = v.strip()
                    if v.lower() not in NO_ACTIVITY and v not in out.activity_order:
                        out.activity_order.append(v)


def _read_track(el: ET.Element, xml_path: Path) -> CvatTrack:
    tid = _int(el.get("id"), xml_path, "track id")
    label = (el.get("label") or "").strip()
    where = f"track {tid}"
    if not label:
        raise CvatError(f"{xml_path}: {where} has no label")
    boxes = {}
    for b in el.findall("box"):
        frame = _int(b.get("frame"), xml_path, f"{where} box frame")
        what = f"{where} box at frame {frame}"
        x1, y1, x2, y2 = (_float(b.get(k), xml_path, f"{what}: {k}") for k in ("xtl", "ytl", "xbr", "ybr"))
        if x2 <= x1 or y2 <= y1:  # swapped corners would be read as another box: say so, not guess
            raise CvatError(f"{xml_path}: {what}: xbr/ybr ({x2:g}, {y2:g}) must be right of and below "
                            f"xtl/ytl ({x1:g}, {y1:g})")
        rot = _float(b.get("rotation") or "0", xml_path, f"{what}: rotation")
        if rot % 360:
            x1, y1, x2, y2 = _enclosing(x1, y1, x2, y2, rot)
        boxes[frame] = CvatBox(frame, b.get("outside", "0").strip() == "1", (x1, y1, x2, y2), _activity(b))
    if not boxes:
        shapes = sorted({c.tag for c in el})
        kind = f" (only {', '.join(shapes)}: only box tracks are imported)" if shapes else ""
        raise CvatError(f"{xml_path}: {where} ({label}) has no <box>{kind}")
    return CvatTrack(tid, label, [boxes[f] for f in sorted(boxes)])


def _read_tag(el: ET.Element, xml_path: Path, tracks: dict[int, str]) -> tuple[int, str, int | None]:
    frame = _int(el.get("frame"), xml_path, "tag frame")
    label = (el.get("label") or "").strip()
    ref = None
    for a in el.findall("attribute"):
        if (a.get("name") or "").strip().lower() in TRACK_ATTRS and (a.text or "").strip():
            ref = _int(a.text, xml_path, f"tag '{label}' at frame {frame}: attribute {a.get('name')}")
            if ref not in tracks:
                raise CvatError(f"{xml_path}: tag '{label}' at frame {frame} names track {ref}, which does not exist")
    return frame, label, ref


def _activity(box: ET.Element) -> str:
    attrs = {(a.get("name") or "").strip().lower(): (a.text or "").strip() for a in box.findall("attribute")}
    value = next((attrs[k] for k in ACTIVITY_ATTRS if k in attrs), "")
    return "" if value.lower() in NO_ACTIVITY else value


def _enclosing(x1: float, y1: float, x2: float, y2: float, degrees: float) -> tuple[float, float, float, float]:
    """The axis-aligned box around a box rotated about its centre (the format has no rotation)."""
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    hw, hh = (w * c + h * s) / 2, (w * s + h * c) / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def _int(text, xml_path: Path, what: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise CvatError(f"{xml_path}: {what}: {text!r} is not an integer") from None


def _float(text, xml_path: Path, what: str) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise CvatError(f"{xml_path}: {what}: {text!r} is not a number")
    return v
