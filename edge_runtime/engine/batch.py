"""Frames of many streams through one engine set: one backbone call for all their frames, and one
sampler call for the clips that complete together (when the sampler graph has a batch axis).

Every engine here comes from the same owner (``Engine.stream_engine``): they share the backend
sessions, so a batch costs one call where N streams would cost N. Each stream's frames still go
through its own checks, clock, gaps and SVD, and land exactly as ``Engine.ingest`` would put them.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Sequence

import numpy as np

from edge_runtime.memory.clip_step import clip_inputs
from edge_runtime.engine.engine import Engine
from edge_runtime.sources.frames import resize_square
from edge_runtime.memory.token_memory import TokenMemory


def ingest_streams(items: Sequence[tuple[Engine, np.ndarray, np.ndarray]]) -> list[int | Exception]:
    """[(engine, frames, times), ...] -> clips committed per item, or the ValueError that item's
    input raised (a bad item never fails the others). Engines may repeat (their items then go in
    order)."""
    results: list[int | Exception] = [0] * len(items)
    good: list[int] = []
    with ExitStack() as locks:
        for eng in dict.fromkeys(e for e, _, _ in items):  # each engine locked once, in item order
            locks.enter_context(eng._lock)
        checked = {}
        for i, (eng, frames, times) in enumerate(items):
            try:
                checked[i] = _check(eng, frames, times, [checked[j] for j in good if items[j][0] is eng])
                good.append(i)
            except ValueError as err:
                results[i] = err
        good = [i for i in good if len(checked[i][1])]
        if not good:
            return results
        owner = items[good[0]][0]
        frames = np.concatenate([checked[i][0] for i in good])
        tokens = owner.encode(frames)  # one backbone pass for every stream's frames (chunked by batch size)
        cursors, at = {}, 0
        for i in good:
            n = len(checked[i][1])
            cursors[i] = [tokens[at : at + n], checked[i][1], 0]
            at += n
        _feed(items, good, cursors, results)
    return results


def _check(eng: Engine, frames, times, earlier) -> tuple[np.ndarray, np.ndarray]:
    frames, times = eng.check_frames(frames, times)
    if earlier and len(times) and times[0] <= earlier[-1][1][-1]:
        raise ValueError(f"frame time {times[0]:.3f} s is not after the last one ({earlier[-1][1][-1]:.3f} s)")
    if len(frames) and frames.shape[1:3] != (eng.frame_size, eng.frame_size):
        frames = np.stack([resize_square(f, eng.frame_size) for f in frames])
    return frames, times


def _feed(items, order: list[int], cursors: dict, results: list) -> None:
    """Add each stream's tokens until its clip is full; run the full clips of all streams through
    one sampler call; repeat until every token is in."""
    while True:
        ready: list[int] = []
        for i in order:
            eng = items[i][0]
            if any(eng is items[j][0] for j in ready):
                continue  # this engine's next clip waits for its previous one's commit
            toks, times, k = cursors[i]
            while k < len(toks):
                full = eng._add(np.asarray(toks[k], np.float32), float(times[k]))
                k += 1
                if full:
                    ready.append(i)
                    break
            cursors[i][2] = k
        if not ready:
            return
        engines = [items[i][0] for i in ready]
        t0 = time.perf_counter()
        TokenMemory.step_many([e.memory for e in engines],
                              [clip_inputs(e._pending, e._pending_t) for e in engines])
        dt = time.perf_counter() - t0
        for i, e in zip(ready, engines):
            if e.on_stage is not None:
                e.on_stage("sampler", dt / len(engines))
            e._after_step(e.clip_frames)
            results[i] += 1
