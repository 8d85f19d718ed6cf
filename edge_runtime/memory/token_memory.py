"""The m-token memory, kept where the sampler runs, in two fixed buffer sets (ping-pong).

Each clip the sampler reads the front set and writes the back set; swapping which set is the
front is the commit. The same buffer is never bound as both an input and an output of one call
(TensorRT gives wrong results for that), and nothing is allocated after construction, so the
memory's size is the same after one clip and after a week.

``read()`` copies the front set to the host: the engine does that once per commit and answers
queries from the copy, so queries never touch buffers the sampler is writing.

A sampler with a recurrent state of its own (S5: its S4 layers' state, ``sampler_state``) carries it
in the same buffer sets, committed, read, snapshotted and restored with the memory tokens.

Several streams can share one sampler: when its graph has a dynamic batch axis, ``step_many`` runs
the clips of many streams' memories in one call (each memory's rows gathered into a batch, the new
rows written into each memory's back set, every set swapped).
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends.base import Buffer, Runner

MEMORY_INPUTS = ("mem", "mem_t", "mem_p", "mem_valid")  # what the heads read
SAMPLER_STATE = "sampler_state"  # an optional sampler input; the graph writes "new_sampler_state"
CLIP_INPUTS = ("clip", "clip_t", "clip_p")
MAX_STREAMS_PER_CALL = 64  # the TensorRT plans' n_streams profile ends there (ONNX graphs take any number)


class TokenMemory:
    def __init__(self, sampler: Runner) -> None:
        self.sampler = sampler
        meta = sampler.get_input_metadata()
        # May one sampler call carry many streams' rows (step_many)? The engine sets it from the
        # bundle; a named batch axis (n_streams) is one row here.
        self.batched = False
        self.carried = carried_inputs(meta)
        self.shapes = {n: tuple(d if isinstance(d, int) else 1 for d in meta[n].shape) for n in self.carried + CLIP_INPUTS}
        self.dtypes = {n: meta[n].dtype for n in self.carried + CLIP_INPUTS}
        self.m = self.shapes["mem"][1]
        self._sets = [self._alloc_set(), self._alloc_set()]
        self._clip = {n: sampler.alloc(self.shapes[n], self.dtypes[n]) for n in CLIP_INPUTS}
        self._front = 0
        self.steps = 0

    def _alloc_set(self) -> dict[str, Buffer]:
        return {n: self.sampler.alloc(self.shapes[n], self.dtypes[n]) for n in self.carried}

    @property
    def front(self) -> dict[str, Buffer]:
        return self._sets[self._front]

    @property
    def back(self) -> dict[str, Buffer]:
        return self._sets[1 - self._front]

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for s in self._sets for b in s.values()) + sum(b.nbytes for b in self._clip.values())

    def reset(self) -> None:
        """Empty memory: every slot invalid (mem_valid = 0), so the first clips fill it."""
        for s in self._sets:
            for b in s.values():
                b.fill_zero()
        self._front = 0
        self.steps = 0

    def step(self, clip: np.ndarray, clip_t: np.ndarray, clip_p: np.ndarray) -> None:
        """One sampler call: front + clip -> back, then swap."""
        for n, arr in zip(CLIP_INPUTS, (clip, clip_t, clip_p)):
            self._clip[n].upload(np.asarray(arr, self.dtypes[n]))
        src, dst = self.front, self.back
        self.sampler.infer_bound({**src, **self._clip}, {"new_" + n: dst[n] for n in self.carried})
        self.swap()

    @staticmethod
    def step_many(memories: list["TokenMemory"], clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """One sampler call for many memories (all sharing one batched sampler), else one each."""
        if len(memories) == 1 or not memories[0].batched:
            for mem, clip in zip(memories, clips):
                mem.step(*clip)
            return
        first = memories[0]
        if len(memories) > MAX_STREAMS_PER_CALL:
            for i in range(0, len(memories), MAX_STREAMS_PER_CALL):
                TokenMemory.step_many(memories[i : i + MAX_STREAMS_PER_CALL], clips[i : i + MAX_STREAMS_PER_CALL])
            return
        feed = {n: np.concatenate([m.front[n].download() for m in memories]) for n in first.carried}
        for j, n in enumerate(CLIP_INPUTS):
            feed[n] = np.concatenate([np.asarray(c[j], first.dtypes[n]).reshape(first.shapes[n]) for c in clips])
        out = first.sampler.infer(feed)
        for i, mem in enumerate(memories):
            for n in first.carried:
                mem.back[n].upload(out["new_" + n][i : i + 1])
            mem.swap()

    def swap(self) -> None:
        """Commit a step whose new memory is in the back set: the back set becomes the front."""
        self._front = 1 - self._front
        self.steps += 1

    def read(self) -> dict[str, np.ndarray]:
        """Host copies of the committed memory (and the sampler's state, if it has one)."""
        return {n: b.download() for n, b in self.front.items()}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [n for n in self.carried if n not in arrays]
        if missing:
            raise ValueError(f"no {', '.join(missing)} (written by a bundle whose sampler carries "
                             f"{'no state' if SAMPLER_STATE in missing else 'a state'})")
        for n in self.carried:
            arr = np.asarray(arrays[n])
            if arr.shape != tuple(self.shapes[n]):
                raise ValueError(f"memory '{n}' has shape {arr.shape}, expected {tuple(self.shapes[n])}")
            self.front[n].upload(arr.astype(self.dtypes[n], copy=False))
        for b in self.back.values():
            b.fill_zero()


def carried_inputs(meta) -> tuple[str, ...]:
    """The sampler inputs a stream carries from clip to clip, given the graph's input metadata."""
    return MEMORY_INPUTS + ((SAMPLER_STATE,) if SAMPLER_STATE in meta else ())
