"""Which tracker library follows checkout items best: ID switches, fragmented tracks and purity on
oracle detections (with box jitter and misses) from held-out generator videos at 5 fps.

    python -m tools.accuracy.item_trackers --videos 4 --duration 900 --json out.json

Candidates: the runtime's ItemTracker, norfair-enough (box IoU and centre distance), and ByteTrack /
OC-SORT / SORT from ``trackers`` (Roboflow's tracker package; ``supervision`` no longer ships ByteTrack
itself). A
candidate whose library is not installed is reported as such and skipped; ``trackers`` needs
``opencv-python`` beside our headless OpenCV, so measure it from a side folder:
``pip install --no-deps --target /tmp/trk trackers supervision pyDeprecate defusedxml`` and run
with ``PYTHONPATH=/tmp/trk``.

Per detection, the id of the confirmed track it went to (none while a track is still tentative);
per instance, its ids in time order. id_switches: changes of id along an instance's frames;
fragments: ids per instance beyond the first; purity: of a track's frames, the share of its main
instance (pooled over tracks); coverage: detections that got a confirmed id.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

import numpy as np

from edge_runtime.checkout import CheckoutVideo, heldout_video
from edge_runtime.items.detections import Detections, from_frame_labels

FPS = 5.0
PX = 640.0  # boxes go to the libraries in pixels of a 640 px frame: some Kalman noise models assume pixels


class Norfair:
    def __init__(self, metric: str) -> None:
        from norfair import Tracker

        self.metric = metric
        if metric == "iou":
            self.tracker = Tracker(distance_function="iou", distance_threshold=0.99, hit_counter_max=10,
                                   initialization_delay=0)
        else:
            self.tracker = Tracker(distance_function="euclidean", distance_threshold=0.08 * PX, hit_counter_max=10,
                                   initialization_delay=0)
        self.frame = 0

    def step(self, d: Detections) -> np.ndarray:
        from norfair import Detection

        self.frame += 1
        pts = d.boxes.reshape(-1, 2, 2) * PX if self.metric == "iou" else d.centers[:, None, :] * PX
        dets = [Detection(points=p.astype(np.float64), data=(self.frame, i)) for i, p in enumerate(pts)]
        out = np.full(len(d), -1, np.int64)
        for obj in self.tracker.update(dets):
            f, i = obj.last_detection.data
            if f == self.frame:
                out[i] = obj.id
        return out


class Runtime:
    """The runtime's own ItemTracker (norfair IoU plus its held-onto-resting penalty and carry gate)."""

    def __init__(self) -> None:
        from edge_runtime.items.tracker import ItemTracker

        self.tracker = ItemTracker(fps=FPS)

    def step(self, d: Detections) -> np.ndarray:
        self.tracker.update(d)
        out = np.full(len(d), -1, np.int64)
        for tid, i in self.tracker.last_seen.items():
            out[i] = tid
        return out


class RoboflowTracker:
    def __init__(self, name: str) -> None:
        import trackers

        kw = dict(lost_track_buffer=30, frame_rate=FPS, minimum_consecutive_frames=2)
        self.tracker = {"bytetrack": trackers.ByteTrackTracker, "ocsort": trackers.OCSORTTracker,
                        "sort": trackers.SORTTracker}[name](**kw)

    def step(self, d: Detections) -> np.ndarray:
        import supervision as sv

        sd = sv.Detections(xyxy=d.boxes.astype(np.float32) * PX, confidence=d.scores, class_id=d.classes,
                           data={"idx": np.arange(len(d))})
        res = self.tracker.update(sd)
        out = np.full(len(d), -1, np.int64)
        if len(res):
            out[res.data["idx"]] = res.tracker_id
        return out


CANDIDATES = {
    "runtime": Runtime,
    "norfair-iou": lambda: Norfair("iou"),
    "norfair-centre": lambda: Norfair("centre"),
    "bytetrack": lambda: RoboflowTracker("bytetrack"),
    "ocsort": lambda: RoboflowTracker("ocsort"),
    "sort": lambda: RoboflowTracker("sort"),
}


def score(pairs: list[tuple], n_dets: int) -> dict:
    """pairs: (instance, track id) per detection in time order, a track id None where it got none."""
    by_inst: dict = defaultdict(list)
    by_track: dict = defaultdict(Counter)
    for inst, tid in pairs:
        if tid is not None:
            by_inst[inst].append(tid)
            by_track[tid][inst] += 1
    switches = sum(sum(a != b for a, b in zip(ids, ids[1:])) for ids in by_inst.values())
    fragments = sum(len(set(ids)) - 1 for ids in by_inst.values())
    assigned = sum(sum(c.values()) for c in by_track.values())
    main = sum(max(c.values()) for c in by_track.values())
    return {"instances": len(by_inst), "tracks": len(by_track), "id_switches": switches, "fragments": fragments,
            "purity": main / max(1, assigned), "coverage": assigned / max(1, n_dets)}


def run(name: str, videos: list[CheckoutVideo], jitter: float, miss: float) -> dict:
    pairs, n = [], 0
    for j, v in enumerate(videos):  # ids are per video: keyed by (video, id)
        tracker = CANDIDATES[name]()
        rng = np.random.default_rng(v.seed)
        for k in range(int(v.duration_s * FPS)):
            d = from_frame_labels(v.frame_labels(k / FPS), jitter=jitter, miss=miss, rng=rng)
            ids = tracker.step(d)
            pairs += [((j, i), (j, t) if t >= 0 else None) for i, t in zip(d.instance_ids.tolist(), ids.tolist())]
            n += len(d)
    return score(pairs, n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--duration", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", action="append", default=None,
                    help="JITTER,MISS (repeatable; default 0.05,0.1 and 0.1,0.2)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    noises = [tuple(float(x) for x in s.split(",")) for s in (a.noise or ["0.05,0.1", "0.1,0.2"])]
    videos = [CheckoutVideo(s, a.duration, look=lk, shrink="0.3,0.3,0.1")
              for s, lk in (heldout_video(a.seed, i) for i in range(a.videos))]
    results = {}
    for name in CANDIDATES:
        try:
            CANDIDATES[name]()
        except ImportError as e:
            print(f"{name}: not installed ({e.name}); skipped", file=sys.stderr)
            continue
        for jitter, miss in noises:
            r = run(name, videos, jitter, miss)
            results[f"{name} jitter={jitter:g} miss={miss:g}"] = r
            print(f"{name:15s} jitter={jitter:<5g} miss={miss:<4g} instances={r['instances']:4d} tracks={r['tracks']:4d} "
                  f"id_switches={r['id_switches']:4d} fragments={r['fragments']:4d} purity={r['purity']:.3f} "
                  f"coverage={r['coverage']:.3f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
