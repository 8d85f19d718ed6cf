"""The one ingest path, for one stream or many: the frames of every stream handed in together go
through one backbone call per batch, every T of a stream's frames make a clip, and the clips that
complete together run as one sampler call (when the sampler graph has a batch axis). One stream
is a batch of one: ``Engine.ingest`` comes here too.

Each item is (stream, frames, times): the ``StreamState`` the frames land in (``Engine.new_stream``),
on the graphs of the engine handed in with them. Each stream's frames go through its own checks,
clock, gaps and SVD. The backbone runs batch by batch as the clip loop
asks for tokens, so a whole video handed in at once never holds more than a batch of tokens
beyond what is waiting to be added.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Protocol, Sequence

import numpy as np

from edge_runtime.engine.stream_state import StreamState

Item = tuple[StreamState, np.ndarray, np.ndarray]
Report = Callable[[str, float], None]


class Graphs(Protocol):
    """What the ingest path asks of the engine whose graphs it runs (engine.py's ``Engine``)."""

    batch_size: int

    def check_frames(self, frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def fit_frames(self, frames: np.ndarray) -> np.ndarray: ...

    def encode(self, frames: np.ndarray, report: Report | None = None) -> np.ndarray: ...

    def detect(self, tokens: np.ndarray, times: np.ndarray, report: Report | None = None) -> list: ...

    def step(self, states: list[StreamState]) -> None: ...


def ingest_streams(engine: Graphs, items: Sequence[Item]) -> list[int | Exception]:
    """[(stream, frames, times), ...] through ``engine``'s graphs -> clips committed per item, or the
    ValueError that item's input raised (a bad item never fails the others). Streams may repeat
    (their items then go in order)."""
    return _ingest(engine, items, encoded=False)


def ingest_tokens(engine: Graphs, items: Sequence[Item]) -> list[int | Exception]:
    """Like ``ingest_streams`` for frames already through the backbone: (stream, tokens (N, P, d), times)."""
    return _ingest(engine, items, encoded=True)


def _ingest(engine: Graphs, items: Sequence[Item], *, encoded: bool) -> list[int | Exception]:
    results: list[int | Exception] = [0] * len(items)
    states = list(dict.fromkeys(st for st, _, _ in items))
    with ExitStack() as locks:
        for st in sorted(states, key=id):  # one order for every caller: two batches never deadlock
            locks.enter_context(st.lock)
        checked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        last: dict[int, float] = {}  # a repeated stream's later items start after its earlier ones
        for i, (st, data, times) in enumerate(items):
            try:
                if encoded:
                    times = np.asarray(times, np.float64).reshape(-1)
                else:
                    data, times = engine.check_frames(data, times)
                st.check_times(times, last.get(id(st)))
            except ValueError as err:
                results[i] = err
                continue
            if len(times):
                checked[i] = (data, times)
                last[id(st)] = float(times[-1])
        if checked:
            # the backbone's time is reported to the first stream with frames (the batch is shared)
            report = items[next(iter(checked))][0].report
            tokens = _Tokens([d for d, _ in checked.values()], None if encoded else engine, report)
            _clip_loop(engine, items, list(checked), [t for _, t in checked.values()], tokens, results)
    return results


class _Tokens:
    """The items' tokens in one sequence, item after item. Frames go through the backbone a batch
    (``engine.batch_size`` of that sequence) at a time, when the clip loop first asks for one of
    its tokens, and a batch is let go once all its tokens are taken."""

    def __init__(self, parts: list[np.ndarray], engine: Graphs | None = None, report: Report | None = None) -> None:
        self.parts, self.engine, self.report = parts, engine, report
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.batch = engine.batch_size if engine is not None else 1
        self._batches: dict[int, list] = {}  # batch index -> [tokens, how many taken]

    def get(self, i: int) -> np.ndarray:
        if self.engine is None:
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            return np.asarray(self.parts[k][i - self.starts[k]], np.float32)
        b = i // self.batch
        held = self._batches.get(b)
        if held is None:
            held = self._batches[b] = [self.engine.encode(self._frames(b * self.batch, (b + 1) * self.batch), self.report), 0]
        held[1] += 1
        if held[1] == len(held[0]):
            del self._batches[b]
        return held[0][i - b * self.batch]

    def frame(self, i: int) -> np.ndarray | None:
        """Frame ``i`` of the sequence as it came in (None for tokens handed in without frames)."""
        if self.engine is None:
            return None
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - self.starts[k]]

    def _frames(self, a: int, b: int) -> np.ndarray:
        """Frames [a, b) of the sequence, each part's at the backbone's input size."""
        out = []
        for k, part in enumerate(self.parts):
            lo, hi = max(a, self.starts[k]), min(b, self.starts[k + 1])
            if lo < hi:
                out.append(self.engine.fit_frames(part[lo - self.starts[k] : hi - self.starts[k]]))
        return out[0] if len(out) == 1 else np.concatenate(out)


def _clip_loop(engine: Graphs, items, order: list[int], times: list[np.ndarray], tokens: _Tokens, results: list) -> None:
    """Add each stream's tokens until its clip is full; run the full clips of all streams through
    one sampler call; repeat until every token is in."""
    starts = dict(zip(order, tokens.starts[:-1].tolist()))
    ts = dict(zip(order, times))
    cursor = dict.fromkeys(order, 0)
    seen = _EventFrames(engine)
    while True:
        ready: list[int] = []
        for i in order:
            st = items[i][0]
            if any(st is items[j][0] for j in ready):
                continue  # this stream's next clip waits for its previous one's commit
            k, n = cursor[i], len(ts[i])
            while k < n:
                tok, t = tokens.get(starts[i] + k), float(ts[i][k])
                if st.items is not None:  # the frame too: its light zone's pixels, its crops (the alerts' evidence)
                    seen.add(st, tok, t, tokens.frame(starts[i] + k))
                k += 1
                if not st.takes(t):
                    continue
                if st.add(tok, t):
                    ready.append(i)
                    break
            cursor[i] = k
        if not ready:
            seen.flush()
            return
        engine.step([items[i][0] for i in ready])
        for i in ready:
            results[i] += 1


class _EventFrames:
    """Every frame's tokens of the streams with an event path, through the event head a batch at a
    time (at most ``engine.batch_size`` frames held per stream), into each stream's item tracks in
    time order."""

    def __init__(self, engine: Graphs) -> None:
        self.engine = engine
        self.held: dict[int, tuple[StreamState, list[np.ndarray], list[float], list]] = {}

    def add(self, st: StreamState, tok: np.ndarray, t: float, frame: np.ndarray | None = None) -> None:
        _, toks, ts, frames = self.held.setdefault(id(st), (st, [], [], []))
        toks.append(tok)
        ts.append(t)
        frames.append(frame)
        if len(toks) >= self.engine.batch_size:
            self._run(id(st))

    def flush(self) -> None:
        for key in list(self.held):
            self._run(key)

    def _run(self, key: int) -> None:
        st, toks, ts, frames = self.held.pop(key)
        if toks:
            st.observe(self.engine.detect(np.stack(toks), np.asarray(ts), st.report), frames)
