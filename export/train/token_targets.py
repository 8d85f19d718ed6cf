"""Which frame tokens show an activity in progress: a training target for the neural sampler.

LVM-Net trains the sampler only through the query heads. On the checkout benchmark at m = 392 (0.4 %
of a 30-minute stream's 88,200 tokens) that signal never started: the heads cannot learn to read a
memory that holds no event, and the sampler gets no gradient toward events from heads that cannot
read (measured: losses flat, even the query-aware oracle no better than random tokens). This target
breaks the loop from the annotations alone — events and their object boxes, fields ReST also has —
so it carries over to converted real annotations.

Per frame at time t and per event in progress (start <= t < end), the token of the patch that holds
the centre of that event's object box is a positive. That is about one token per busy second,
~435 per 30-minute generator video: the size of the memory.
"""
from __future__ import annotations

import numpy as np


def event_token_targets(annotations: dict, times: np.ndarray, grid: int) -> np.ndarray:
    """(N,) frame times -> (N, grid*grid) float32, 1 at the patch of each in-progress event's object."""
    return (event_token_labels(annotations, times, grid)[0] >= 0).astype(np.float32)


def event_token_labels(annotations: dict, times: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) frame times -> two (N, grid*grid) int32 maps, -1 elsewhere: the instance id and the
    activity id of the in-progress event whose object box centre lies in that patch. The query heads
    learn from them which memory tokens show the queried object and what is being done to it
    (export/train/heads_stage.py: identity and token-activity losses)."""
    times = np.asarray(times, np.float64)
    inst = np.full((len(times), grid * grid), -1, np.int32)
    act = np.full((len(times), grid * grid), -1, np.int32)
    boxes = {int(k): np.asarray(v, np.float64).reshape(-1, 5) for k, v in annotations.get("boxes", {}).items()}
    for e in annotations.get("events", ()):
        track = boxes.get(int(e["instance_id"]))
        if track is None or len(track) == 0:
            continue
        frames = np.flatnonzero((times >= e["start"]) & (times < e["end"]))
        # only while the object is visible: no box, no token shows it
        frames = frames[(times[frames] >= track[0, 0]) & (times[frames] <= track[-1, 0])]
        if len(frames) == 0:
            continue
        t = times[frames]
        cx = (np.interp(t, track[:, 0], track[:, 1]) + np.interp(t, track[:, 0], track[:, 3])) / 2
        cy = (np.interp(t, track[:, 0], track[:, 2]) + np.interp(t, track[:, 0], track[:, 4])) / 2
        col = np.clip((cx * grid).astype(int), 0, grid - 1)
        row = np.clip((cy * grid).astype(int), 0, grid - 1)
        inst[frames, row * grid + col] = int(e["instance_id"])
        act[frames, row * grid + col] = int(e["activity_id"])
    return inst, act
