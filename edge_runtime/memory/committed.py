"""What queries read of a stream: an immutable host copy of its memory, taken at each commit.

``edge_runtime/engine/stream_state.py`` takes it (copy-on-commit: answering never blocks intake and
intake never changes what a running query sees); the query stage reads it, so it lives below both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Committed:
    """What queries read: host copies taken at a commit; never mutated afterwards."""
    memory: dict[str, np.ndarray]  # MEMORY_INPUTS; a reader state's lacks "mem" (its facts stand for it)
    svd_basis: np.ndarray
    svd_sv: np.ndarray
    start: float | None
    end: float | None
    gaps: tuple[tuple[float, float], ...]
    version: int
    facts: dict[str, np.ndarray] | None = None  # the reader's facts of this memory (reader engines only)
    # with a timeline track: ``facts`` are the memory's m rows then the timeline's, and these are the
    # times / validity of all of them (the answer graph's mem_t, mem_valid); None without one
    fact_t: np.ndarray | None = None
    fact_valid: np.ndarray | None = None
    timeline_span: tuple[float, float] | None = None  # oldest, newest timeline token held
