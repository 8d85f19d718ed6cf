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

``token_fact_targets`` gives the memory reader's dense targets from the same annotations: per frame
and patch, the instance, its activity, its box and its event's span.
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


def token_fact_targets(annotations: dict, times: np.ndarray, grid: int):
    """(N,) frame times -> per frame and patch: instance (N, P) int64 (-1 none), activity (N, P)
    (-1 none), box (N, P, 4) and event span offsets (N, P, 2) seconds (t - start, end - t).

    A patch shows an instance when its centre lies inside the instance's box at that time, and the
    box centre's patch always does (small objects cover no patch centre). Where boxes overlap, an
    instance with an event in progress wins, then the smaller box (the one in front)."""
    times = np.asarray(times, np.float64)
    N, P = len(times), grid * grid
    inst = np.full((N, P), -1, np.int64)
    act = np.full((N, P), -1, np.int64)
    box = np.zeros((N, P, 4), np.float32)
    span = np.zeros((N, P, 2), np.float32)
    prio = np.full((N, P), -np.inf)
    centres = (np.arange(grid) + 0.5) / grid
    px, py = np.tile(centres, grid), np.repeat(centres, grid)  # patch p = row * grid + col
    events: dict[int, list[dict]] = {}
    for e in annotations.get("events", ()):
        events.setdefault(int(e["instance_id"]), []).append(e)
    for key, track in annotations.get("boxes", {}).items():
        iid = int(key)
        tr = np.asarray(track, np.float64).reshape(-1, 5)
        if len(tr) == 0:
            continue
        f = np.flatnonzero((times >= tr[0, 0]) & (times <= tr[-1, 0]))
        if len(f) == 0:
            continue
        t = times[f]
        b = np.stack([np.interp(t, tr[:, 0], tr[:, j]) for j in range(1, 5)], 1)  # (F, 4)
        a_id = np.full(len(f), -1, np.int64)
        sp = np.zeros((len(f), 2), np.float32)
        for e in events.get(iid, ()):
            on = (t >= e["start"]) & (t < e["end"])
            a_id[on] = int(e["activity_id"])
            sp[on, 0], sp[on, 1] = t[on] - e["start"], e["end"] - t[on]
        inside = (px[None] >= b[:, 0:1]) & (px[None] <= b[:, 2:3]) & (py[None] >= b[:, 1:2]) & (py[None] <= b[:, 3:4])
        cc = np.clip(((b[:, 0] + b[:, 2]) / 2 * grid).astype(int), 0, grid - 1)
        cr = np.clip(((b[:, 1] + b[:, 3]) / 2 * grid).astype(int), 0, grid - 1)
        inside[np.arange(len(f)), cr * grid + cc] = True
        score = (a_id >= 0) * 10.0 - (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (F,)
        win = inside & (score[:, None] > prio[f])
        fi, pi = np.nonzero(win)
        rows = f[fi]
        prio[rows, pi] = score[fi]
        inst[rows, pi] = iid
        act[rows, pi] = a_id[fi]
        box[rows, pi] = b[fi]
        span[rows, pi] = sp[fi]
    return inst, act, box, span
