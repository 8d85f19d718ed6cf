"""The memory reader at commit time: the committed memories of the streams that commit together, and
their SVD states (and, with a timeline track, each committed clip cut into rows of the memory's shape:
edge_runtime/memory/timeline.py), through the bundle's "reader" graph in one call (its batch axis "streams"), giving
each memory its *facts* (``stream_state.FACT_NAMES``: per-token identity, activity logits, event
logit, box, event span). Queries then answer from the facts through the "answer" graph
(edge_runtime/query/reader_query.py) without reading the memory again.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends.base import Runner
from edge_runtime.memory.committed import Committed
from edge_runtime.memory.timeline import FACT_NAMES, TimelineSpec, select
from edge_runtime.memory.token_memory import MEMORY_INPUTS

# rows per reader call: the graph's "streams" axis takes up to 256; 64 keeps a call's activations
# (B x (m + r)^2 attention scores per head) small on a kiosk
MAX_STREAMS_PER_CALL = 64


def fact_specs(answer: Runner, rows: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, dtype) of one memory's facts (``rows`` = m, plus the timeline's capacity when the
    bundle keeps one), as the answer graph takes them. The graph's row axis may be named (dynamic: the
    engine then feeds only the rows inside the asked windows); its other axes are fixed."""
    meta = answer.get_input_metadata()
    out = {}
    for n in FACT_NAMES:
        shape = tuple(meta[n].shape)
        if not all(isinstance(d, int) for d in shape[1:]):
            raise ValueError(f"answer graph input '{n}' has a dynamic axis past its rows ({shape}); facts have a fixed size")
        if isinstance(shape[0], int) and shape[0] != rows:
            raise ValueError(f"answer graph input '{n}' has {shape[0]} rows; the memory and timeline hold {rows}")
        out[n] = ((rows,) + shape[1:], meta[n].dtype)
    return out


def rows_dynamic(answer: Runner) -> bool:
    """Whether the answer graph takes any number of fact rows (then only the asked windows' are fed)."""
    return not isinstance(tuple(answer.get_input_metadata()["mem_t"].shape)[0], int)


def read_facts(reader: Runner, commits: list[Committed], clips: list[dict[str, np.ndarray] | None] | None = None,
               spec: TimelineSpec | None = None) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray] | None]]:
    """The facts of each commit's memory and, with a timeline, the committed clip's timeline tokens:
    ``clips[i]`` is commit i's clip as reader rows (``timeline.clip_rows``) or None. Memories and clip
    rows share the reader calls, up to ``MAX_STREAMS_PER_CALL`` rows each.
    -> (facts per commit, timeline tokens per commit or None)."""
    dtypes = {n: m.dtype for n, m in reader.get_input_metadata().items()}
    clips = clips or [None] * len(commits)
    rows: list[dict[str, np.ndarray]] = []  # one reader row each: (1, m, ...) inputs
    owner: list[tuple[int, int]] = []       # (commit, -1 for its memory or the clip row's index)
    for i, (c, clip) in enumerate(zip(commits, clips)):
        rows.append({**{k: c.memory[k] for k in MEMORY_INPUTS}, "svd_basis": c.svd_basis, "svd_sv": c.svd_sv})
        owner.append((i, -1))
        for r in range(0 if clip is None else clip["mem"].shape[0]):
            rows.append({**{k: clip[k][r : r + 1] for k in MEMORY_INPUTS}, "svd_basis": c.svd_basis, "svd_sv": c.svd_sv})
            owner.append((i, r))
    res_rows: list[dict[str, np.ndarray]] = []
    for i in range(0, len(rows), MAX_STREAMS_PER_CALL):
        part = rows[i : i + MAX_STREAMS_PER_CALL]
        feed = {k: np.concatenate([p[k] for p in part]).astype(dtypes[k], copy=False) for k in part[0]}
        res = reader.infer(feed)
        res_rows.extend({n: np.asarray(res[n])[j] for n in FACT_NAMES} for j in range(len(part)))
    facts: list = [None] * len(commits)
    clip_facts: list[list[dict[str, np.ndarray]]] = [[] for _ in commits]
    for (i, r), f in zip(owner, res_rows):
        if r < 0:
            facts[i] = f
        else:
            clip_facts[i].append(f)
    tokens: list = [None] * len(commits)
    for i, clip in enumerate(clips):
        if clip is not None and spec is not None:
            stacked = {n: np.stack([f[n] for f in clip_facts[i]]) for n in FACT_NAMES}
            tokens[i] = select(stacked, clip, spec)
    return facts, tokens
