"""CVAT for video 1.1 import: tests/data/cvat/sample_video.xml annotates a 20-frame, 160x120, 10 fps
video written here (2 tracks, one with an outside span; keyframes to interpolate between; an
"activity" box attribute that changes; a tag naming a track and one naming none)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from export.dataset import check_dataset, open_dataset
from export.dataset.cvat import CvatError, import_cvat
from export.dataset.labels import DatasetError, LabelSet

SAMPLE = Path(__file__).parent / "data" / "cvat" / "sample_video.xml"


def _write_video(path: Path, frames: int = 20, size=(160, 120), fps: float = 10.0) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened()
    for i in range(frames):
        w.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    w.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("src") / "sample_video.avi")


@pytest.fixture(scope="module")
def imported(video, tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    return root, json.loads(import_cvat(SAMPLE, video, root).read_text())


def _xml(tmp_path: Path, old: str, new: str) -> Path:
    text = SAMPLE.read_text()
    assert old in text
    p = tmp_path / "variant.xml"
    p.write_text(text.replace(old, new, 1))
    return p


def _err(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_instances_and_labels(imported):
    root, ann = imported
    assert ann["video_id"] == "sample_video" and ann["duration_s"] == 2.0 and ann["fps_boxes"] == 5.0
    assert [(i["instance_id"], i["product"], i["appear"], i["vanish"]) for i in ann["instances"]] == \
        [(0, "apple", 0.0, 2.0), (1, "milk", 0.0, 1.4)]
    # declared order of the activity values, then the tag label; track labels only as objects
    assert (root / "labels.yaml").read_text().split() == \
        "version: 1 activities: - pick_up - scan - bag - inspect objects: - apple - milk".split()
    assert (root / "videos" / "sample_video.avi").is_file()


def test_boxes_normalised_interpolated_with_the_gap(imported):
    _, ann = imported
    apple = {r[0]: r[1:] for r in ann["boxes"]["0"]}
    # 5 fps; outside from frame 8 (0.8 s) until frame 12 (1.2 s): no rows at 0.8 and 1.0
    assert sorted(apple) == [0.0, 0.2, 0.4, 0.6, 1.2, 1.4, 1.6, 1.8]
    assert apple[0.0] == [0.1, 0.1, 0.3, 0.3]
    assert apple[0.2] == [0.15, 0.1, 0.35, 0.3]      # halfway between the keyframes at 0 and 4
    assert apple[0.6] == [0.2, 0.1, 0.4, 0.3]        # held after the last keyframe of the span
    assert apple[1.8] == [0.5, 0.5, 0.75, 0.83333]   # visible until the task's end
    milk = {r[0]: r[1:] for r in ann["boxes"]["1"]}
    assert sorted(milk) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    assert milk[0.8] == pytest.approx([0.2, 0.2, 0.45, 0.45])


def test_events(imported):
    _, ann = imported
    got = [(e["activity"], e["instance_id"], e["start"], e["end"]) for e in ann["events"]]
    assert got == [("pick_up", 1, 0.0, 0.5), ("pick_up", 0, 0.4, 0.8), ("bag", 1, 0.5, 1.4),
                   ("scan", 0, 1.2, 1.6), ("inspect", 0, 1.7, 1.9)]
    assert ann["source"]["tags_without_track"] == 1


def test_the_dataset_reader_accepts_it(imported):
    root, _ = imported
    assert check_dataset(root) == []
    ds = open_dataset(root)
    assert ds.labels == LabelSet(("pick_up", "scan", "bag", "inspect"), ("apple", "milk"))
    assert ds.items[0].annotations["events"][2]["activity_id"] == 2


def test_reimport_and_labels_checked_against_the_folder(video, tmp_path):
    root = tmp_path / "ds"
    import_cvat(SAMPLE, video, root)
    import_cvat(SAMPLE, video, root)  # the same video again: nothing to complain about
    (root / "labels.yaml").write_text("version: 1\nactivities: [pick_up, scan]\nobjects: [apple]\n")
    before = (root / "annotations" / "sample_video.json").read_bytes()
    with pytest.raises(CvatError) as err:
        import_cvat(SAMPLE, video, root)
    assert "activities not in" in _err(err) and "'bag', 'inspect'" in str(err.value)
    assert (root / "annotations" / "sample_video.json").read_bytes() == before  # nothing written


def test_labels_yaml_argument_sets_the_order(video, tmp_path):
    labels = tmp_path / "mine.yaml"
    labels.write_text("version: 1\nactivities: [idle, bag, scan, pick_up, inspect]\nobjects: [milk, apple, bread]\n")
    root = tmp_path / "ds"
    import_cvat(SAMPLE, video, root, labels_yaml=labels)
    ds = open_dataset(root)
    assert ds.labels.objects == ("milk", "apple", "bread")
    assert {e["activity"]: e["activity_id"] for e in ds.items[0].annotations["events"]}["bag"] == 1


@pytest.mark.parametrize("old,new,expect", [
    ("</annotations>", "", "not valid XML"),
    ("<version>1.1</version>", "<version>1.0</version>", "version 1.0"),
    ("<track id=\"1\" label=\"milk\" source=\"manual\">",
     "<track id=\"1\" label=\"milk\"></track><track id=\"2\" label=\"milk\">", "track 1 (milk) has no <box>"),
    ("<track id=\"1\"", "<track id=\"0\"", "track id 0 appears twice"),
    ("<box frame=\"16\"", "<box frame=\"160\"", "box at frame 160 but"),
    ("<attribute name=\"track_id\">0</attribute>", "<attribute name=\"track_id\">9</attribute>", "track 9"),
    ("<width>160</width>", "<width>90</width>", "frames are 90x120"),
    ("xtl=\"80.00\"", "xtl=\"eighty\"", "xtl: 'eighty' is not a number"),
    ('xtl="16.00" ytl="12.00" xbr="48.00" ybr="36.00"', 'xtl="16.00" ytl="36.00" xbr="48.00" ybr="12.00"',
     "must be right of and below xtl/ytl"),  # swapped corners were swapped back without a word
    ('<attribute name="activity">pick_up</attribute>', '<attribute name="activity">pick_pu</attribute>',
     "activity 'pick_pu' is not among the values the task declares"),  # a typo was a new activity
])
def test_bad_exports_are_one_line(video, tmp_path, old, new, expect):
    with pytest.raises(CvatError) as err:
        import_cvat(_xml(tmp_path, old, new), video, tmp_path / "ds")
    assert expect in _err(err) and "variant.xml" in str(err.value)
    assert not (tmp_path / "ds").exists()  # nothing written
    assert isinstance(err.value, (DatasetError, ValueError))


def test_missing_or_clashing_video(video, tmp_path):
    with pytest.raises(CvatError) as err:
        import_cvat(SAMPLE, tmp_path / "gone.mp4", tmp_path / "ds")
    assert "gone.mp4: video not found" in _err(err)
    (tmp_path / "notvideo.mp4").write_bytes(b"not a video at all")
    with pytest.raises(CvatError) as err:
        import_cvat(SAMPLE, tmp_path / "notvideo.mp4", tmp_path / "ds")
    assert "notvideo.mp4" in _err(err) and "OpenCV" in str(err.value)
    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    _write_video(root / "videos" / "sample_video.avi", frames=21)
    with pytest.raises(CvatError) as err:
        import_cvat(SAMPLE, video, root)
    assert "a different video with this name" in _err(err)


def test_rotated_box_becomes_its_enclosing_box(video, tmp_path):
    xml = _xml(tmp_path, "<box frame=\"0\" keyframe=\"1\"", "<box rotation=\"90\" frame=\"0\" keyframe=\"1\"")
    ann = json.loads(import_cvat(xml, video, tmp_path / "ds").read_text())
    # apple at frame 0 is 32x24 px centred on (32, 24): turned a quarter, 24x32
    assert ann["boxes"]["0"][0] == [0.0, 0.125, 0.06667, 0.275, 0.33333]


def test_a_video_given_as_a_relative_symbolic_link_is_placed_as_the_video_it_names(video, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    link = links / "cam2.avi"
    link.symlink_to(os.path.relpath(video, links))
    root = tmp_path / "ds"
    import_cvat(SAMPLE, link, root)
    placed = root / "videos" / "cam2.avi"
    assert placed.is_file() and not placed.is_symlink() and placed.read_bytes() == video.read_bytes()


def test_an_outside_mark_past_the_video_ends_the_span_where_the_video_does(video, tmp_path):
    """CVAT may keep a track's "outside" keyframe far past the last frame: the event and its boxes
    end with the video (the import wrote them to frame 160, and lvm-data check refused the file)."""
    from export.dataset.check import check_dataset

    xml = _xml(tmp_path, '<box frame="14" keyframe="1" outside="1"', '<box frame="160" keyframe="1" outside="1"')
    import_cvat(xml, video, tmp_path / "ds")
    ann = open_dataset(tmp_path / "ds").items[0].annotations
    assert max(e["end"] for e in ann["events"]) <= ann["duration_s"] + 1e-6
    assert all(row[0] <= ann["duration_s"] + 1e-6 for rows in ann["boxes"].values() for row in rows)
    assert not [p for p in check_dataset(tmp_path / "ds") if p.level == "error"]
