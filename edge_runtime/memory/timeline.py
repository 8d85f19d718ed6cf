"""The timeline track (TinyMem's region memory, adapted): what happened when, over the last 30 minutes.

At m = 392 only part of the stream's events leave a token in the m-token memory, so "when" and
"where" over 15-30 minutes cannot come from it alone. The timeline keeps ``per_frame`` tokens for
each frame streamed, where the reader sees an event in progress, with their facts (identity
embedding, activity logits, event logit, box, event span: the reader's outputs, ``FACT_NAMES``) and
their time, in a FIFO of constant size: ``capacity = horizon_s x fps x per_frame`` tokens. No
pixels and no backbone tokens are kept.

How a clip becomes timeline tokens (``clip_rows`` then ``select``): the clip's frame tokens are cut
into rows of the memory's shape (m tokens = ``m // P`` whole frames), so the bundle's one "reader"
graph reads them beside the memory in the same call; each row's facts then give up their
``per_frame x frames`` tokens of highest event logit, wherever in the row's frames they are (a busy
frame may give more than a quiet one: measured slightly better for "when" than a fixed count per
frame). Padding (a partial last clip) is invalid.

The answer step reads the memory's facts and the timeline's side by side (one token table of
m + capacity rows): a window inside the horizon finds the timeline's dense tokens, one beyond it
finds the memory's. numpy only (the runtime), and the training side calls the same functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.backends.bundle import CONTRACT, LONGEST_WINDOW_S, timeline_tokens

FACT_NAMES = tuple(CONTRACT["reader"][1])  # the reader graph's outputs: what a token's facts are
__all__ = ["FACT_NAMES", "LONGEST_WINDOW_S", "Timeline", "TimelineSpec", "check_horizon", "clip_rows", "select"]
KEY = "timeline."  # snapshot keys: timeline.t, timeline.valid, timeline.head


class NoTimeline(ValueError):
    """A sound snapshot written with a bundle without the timeline track, restored into one with it."""


@dataclass(frozen=True)
class TimelineSpec:
    per_frame: int        # tokens kept per frame
    horizon_s: float      # how far back it reaches (stream seconds)
    fps: float            # the model's frame rate
    memory_tokens: int    # m: the reader graph's row length
    tokens_per_frame: int  # P

    @property
    def capacity(self) -> int:
        """Tokens in the FIFO: horizon x fps x per_frame (constant)."""
        return timeline_tokens(self.horizon_s, self.fps, self.per_frame)

    @property
    def frames_per_row(self) -> int:
        return max(1, self.memory_tokens // self.tokens_per_frame)

    @classmethod
    def from_manifest(cls, section: dict[str, Any], cfg) -> "TimelineSpec":
        return cls(per_frame=int(section["per_frame"]), horizon_s=float(section["horizon_s"]), fps=cfg.stream.fps,
                   memory_tokens=cfg.stream.memory_tokens, tokens_per_frame=cfg.backbone.tokens_per_frame)

    def manifest(self, fact_widths: dict[str, int]) -> dict[str, Any]:
        """The bundle manifest's "timeline" section: what it keeps and the formula of its size."""
        floats = sum(fact_widths.values()) + 2  # + time, valid
        return {"per_frame": self.per_frame, "horizon_s": self.horizon_s, "tokens": self.capacity,
                "select": "per reader row of whole frames, per_frame x frames tokens of highest event logit",
                "size": f"horizon_s x fps x per_frame = {self.horizon_s:g} x {self.fps:g} x {self.per_frame} "
                        f"= {self.capacity} tokens of {floats} floats",
                "bytes": int(self.capacity * floats * 4)}


def check_horizon(horizon_s: float, longest_window_s: float) -> None:
    """ValueError (one line) for a timeline too short for the longest query window."""
    if not horizon_s >= longest_window_s:
        raise ValueError(f"a timeline of {horizon_s:g} s cannot hold the longest query window "
                         f"({longest_window_s:g} s)")


def clip_rows(tokens: np.ndarray, times: np.ndarray, n_real: int, spec: TimelineSpec
              ) -> dict[str, np.ndarray]:
    """A clip's frame tokens (T, P, d) at ``times`` (T,) -> reader inputs (R, m, ...) of whole frames:
    mem, mem_t, mem_p, mem_valid. Frames past ``n_real`` (padding) and rows' tail are invalid."""
    T, P, d = tokens.shape
    g, m = spec.frames_per_row, spec.memory_tokens
    R = int(math.ceil(T / g))
    mem = np.zeros((R, m, d), np.float32)
    mem_t = np.zeros((R, m), np.float32)
    mem_p = np.zeros((R, m), np.int64)
    valid = np.zeros((R, m), np.float32)
    for r in range(R):
        f0, f1 = r * g, min(T, (r + 1) * g)
        n = (f1 - f0) * P
        mem[r, :n] = tokens[f0:f1].reshape(n, d)
        mem_t[r, :n] = np.repeat(times[f0:f1], P)
        mem_p[r, :n] = np.tile(np.arange(P), f1 - f0)
        valid[r, :n] = np.repeat((np.arange(f0, f1) < n_real).astype(np.float32), P)
    return {"mem": mem, "mem_t": mem_t, "mem_p": mem_p, "mem_valid": valid}


def select(facts: dict[str, np.ndarray], rows: dict[str, np.ndarray], spec: TimelineSpec
           ) -> dict[str, np.ndarray]:
    """Facts of ``clip_rows``' rows (R, m, ...) -> the tokens the timeline keeps, in time order:
    per row ``per_frame x (valid frames)`` tokens of highest event logit. Keys: the fact names, t."""
    P = spec.tokens_per_frame
    keep_idx, keep_row = [], []
    for r in range(rows["mem_valid"].shape[0]):
        n_frames = int(rows["mem_valid"][r].sum()) // P
        k = spec.per_frame * n_frames
        if k == 0:
            continue
        score = np.where(rows["mem_valid"][r] > 0, facts["event_logit"][r].astype(np.float64), -np.inf)
        idx = np.argpartition(-score, k - 1)[:k]
        keep_idx.append(idx)
        keep_row.append(np.full(k, r))
    if not keep_idx:
        return {n: facts[n][0, :0] for n in FACT_NAMES} | {"t": np.zeros(0, np.float32)}
    ri, ti = np.concatenate(keep_row), np.concatenate(keep_idx)
    t = rows["mem_t"][ri, ti]
    order = np.argsort(t, kind="stable")
    out = {n: np.asarray(facts[n])[ri, ti][order] for n in FACT_NAMES}
    out["t"] = t[order].astype(np.float32)
    return out


class Timeline:
    """The FIFO of one stream: fact arrays of ``capacity`` rows, their times and validity, a write head.
    Owned by the stream state (under its lock); what queries read is a copy taken at commit."""

    def __init__(self, spec: TimelineSpec, fact_shapes: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        """``fact_shapes``: name -> (per-token shape, dtype) of the facts, as the answer graph takes them."""
        self.spec = spec
        L = spec.capacity
        self.facts = {n: np.zeros((L,) + tuple(shape), dt) for n, (shape, dt) in fact_shapes.items()}
        self.t = np.zeros(L, np.float32)
        self.valid = np.zeros(L, np.float32)
        self.head = 0  # next row written (rows wrap: the oldest is overwritten)

    def reset(self) -> None:
        for a in self.facts.values():
            a[:] = 0
        self.t[:] = 0
        self.valid[:] = 0
        self.head = 0

    def push(self, tokens: dict[str, np.ndarray]) -> None:
        """Append ``select``'s tokens (oldest first); beyond capacity the oldest go."""
        n = len(tokens["t"])
        L = self.spec.capacity
        if n > L:  # more than the whole FIFO at once: only the newest fit
            tokens = {k: v[n - L:] for k, v in tokens.items()}
            n = L
        rows = (self.head + np.arange(n)) % L
        for name, arr in self.facts.items():
            arr[rows] = tokens[name]
        self.t[rows] = tokens["t"]
        self.valid[rows] = 1.0
        self.head = int((self.head + n) % L)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.facts.values()) + self.t.nbytes + self.valid.nbytes)

    def status(self) -> dict[str, Any]:
        """Fill and horizon for /v1/status."""
        n = int(self.valid.sum())
        held = self.t[self.valid > 0]
        return {"tokens": self.spec.capacity, "filled": n, "fill": round(n / max(1, self.spec.capacity), 4),
                "horizon_s": self.spec.horizon_s, "per_frame": self.spec.per_frame,
                "oldest": float(held.min()) if n else None, "newest": float(held.max()) if n else None,
                "bytes": self.nbytes}

    def span(self) -> tuple[float, float] | None:
        """(oldest, newest) token time held, None when empty."""
        held = self.t[self.valid > 0]
        return (float(held.min()), float(held.max())) if len(held) else None

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {KEY + n: a.copy() for n, a in self.facts.items()}
        out.update({KEY + "t": self.t.copy(), KEY + "valid": self.valid.copy(),
                    KEY + "head": np.array([self.head], np.int64)})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """ValueError (one line) when the arrays are missing or do not fit this timeline."""
        missing = [k for k in (*self.facts, "t", "valid", "head") if KEY + k not in state]
        if len(missing) == len(self.facts) + 3:
            raise NoTimeline("the snapshot holds no timeline (written with a bundle without the track), "
                             "and this bundle keeps one")
        if missing:
            raise ValueError(f"the snapshot's timeline lacks {', '.join(missing)}")
        for n, a in self.facts.items():
            got = np.asarray(state[KEY + n])
            if got.shape != a.shape:
                raise ValueError(f"the snapshot's timeline '{n}' has shape {got.shape}, this bundle's is {a.shape}")
        for n in ("t", "valid"):
            if np.asarray(state[KEY + n]).shape != (self.spec.capacity,):
                raise ValueError(f"the snapshot's timeline holds {np.asarray(state[KEY + n]).shape[0]} tokens, "
                                 f"this bundle's {self.spec.capacity}")
        for n, a in self.facts.items():
            a[:] = state[KEY + n]
        self.t[:] = state[KEY + "t"]
        self.valid[:] = state[KEY + "valid"]
        self.head = int(np.asarray(state[KEY + "head"]).reshape(-1)[0]) % self.spec.capacity
