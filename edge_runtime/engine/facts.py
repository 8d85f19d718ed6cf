"""The memory reader at commit time: the committed memories of the streams that commit together, and
their SVD states, through the bundle's "reader" graph in one call (its batch axis "streams"), giving
each memory its *facts* (``stream_state.FACT_NAMES``: per-token identity, activity logits, event
logit, box, event span). Queries then answer from the facts through the "answer" graph
(edge_runtime/query/reader_query.py) without reading the memory again.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.backends.base import Runner
from edge_runtime.engine.stream_state import FACT_NAMES, Committed
from edge_runtime.memory.token_memory import MEMORY_INPUTS

# rows per reader call: the graph's "streams" axis takes up to 256; 64 keeps a call's activations
# (B x (m + r)^2 attention scores per head) small on a kiosk
MAX_STREAMS_PER_CALL = 64


def fact_specs(answer: Runner) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, dtype) of one memory's facts, as the answer graph takes them."""
    meta = answer.get_input_metadata()
    out = {}
    for n in FACT_NAMES:
        shape = tuple(meta[n].shape)
        if not all(isinstance(d, int) for d in shape):
            raise ValueError(f"answer graph input '{n}' has a dynamic axis ({shape}); facts have a fixed size")
        out[n] = (shape, meta[n].dtype)
    return out


def read_facts(reader: Runner, commits: list[Committed]) -> list[dict[str, np.ndarray]]:
    """The facts of each commit's memory: one reader call per ``MAX_STREAMS_PER_CALL`` commits,
    each commit one row of the batch."""
    dtypes = {n: m.dtype for n, m in reader.get_input_metadata().items()}
    out: list[dict[str, np.ndarray]] = []
    for i in range(0, len(commits), MAX_STREAMS_PER_CALL):
        part = commits[i : i + MAX_STREAMS_PER_CALL]
        feed = {k: np.concatenate([c.memory[k] for c in part]).astype(dtypes[k], copy=False) for k in MEMORY_INPUTS}
        feed["svd_basis"] = np.concatenate([c.svd_basis for c in part]).astype(dtypes["svd_basis"], copy=False)
        feed["svd_sv"] = np.concatenate([c.svd_sv for c in part]).astype(dtypes["svd_sv"], copy=False)
        res = reader.infer(feed)
        out.extend({n: np.asarray(res[n])[j] for n in FACT_NAMES} for j in range(len(part)))
    return out
