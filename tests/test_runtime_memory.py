"""Device memory: ping-pong buffer sets, outputs never alias inputs, constant bytes."""
import numpy as np
import pytest

from edge_runtime.backends import onnxruntime_runner
from edge_runtime.backends.bundle import load_bundle
from edge_runtime.memory.token_memory import MEMORY_INPUTS, TokenMemory


class Spy:
    """Wraps a runner and records the pointers bound on every call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer_bound(self, inputs, outputs):
        self.calls.append(({k: getattr(v, "ptr", None) for k, v in inputs.items()},
                           {k: v.ptr for k, v in outputs.items()}))
        return self.inner.infer_bound(inputs, outputs)


@pytest.fixture(scope="module")
def sampler(tiny_bundle):
    g = load_bundle(tiny_bundle).graphs["sampler"]
    with onnxruntime_runner(g.onnx, "sampler", g.inputs, g.outputs, threads=2) as r:
        yield r


def _clip(rng, T=16, P=49, d=256, t0=0.0):
    clip = rng.standard_normal((1, T * P, d)).astype(np.float32)
    clip_t = np.repeat(t0 + np.arange(T, dtype=np.float32), P)[None]
    clip_p = np.tile(np.arange(P, dtype=np.int64), T)[None]
    return clip, clip_t, clip_p


def test_ping_pong_never_binds_an_output_to_an_input(sampler):
    spy = Spy(sampler)
    mem = TokenMemory(spy)
    rng = np.random.default_rng(0)
    for i in range(4):
        mem.step(*_clip(rng, t0=16.0 * i))
    set_a = {mem._sets[0][n].ptr for n in MEMORY_INPUTS}
    set_b = {mem._sets[1][n].ptr for n in MEMORY_INPUTS}
    assert not set_a & set_b
    for k, (ins, outs) in enumerate(spy.calls):
        assert not set(ins.values()) & set(outs.values())
        # alternate: even calls read A and write B, odd calls the reverse
        src, dst = (set_a, set_b) if k % 2 == 0 else (set_b, set_a)
        assert {ins[n] for n in MEMORY_INPUTS} == src and set(outs.values()) == dst


def test_memory_starts_invalid_then_fills_and_stays_constant_size(sampler):
    mem = TokenMemory(sampler)
    m = mem.m
    assert mem.read()["mem_valid"].sum() == 0
    bytes0 = mem.nbytes
    ptrs0 = sorted(b.ptr for s in mem._sets for b in s.values())
    rng = np.random.default_rng(1)
    mem.step(*_clip(rng))
    first = mem.read()
    assert first["mem_valid"].sum() == m  # k = m: the first clip fills every slot
    assert set(np.unique(first["mem_t"])) <= set(range(16))
    for i in range(1, 6):
        mem.step(*_clip(rng, t0=16.0 * i))
    assert mem.nbytes == bytes0
    assert sorted(b.ptr for s in mem._sets for b in s.values()) == ptrs0  # nothing re-allocated
    now = mem.read()
    assert now["mem_t"].shape == (1, m) and now["mem_valid"].sum() == m
    assert now["mem_t"].max() >= 16.0  # newer clips made it in


def test_cpu_ping_pong_equals_plain_inference(sampler):
    mem = TokenMemory(sampler)
    rng = np.random.default_rng(2)
    state = {k: v.copy() for k, v in mem.read().items()}
    for i in range(3):
        clip = _clip(rng, t0=16.0 * i)
        ref = sampler.infer({**state, "clip": clip[0], "clip_t": clip[1], "clip_p": clip[2]})
        state = {n: ref["new_" + n] for n in MEMORY_INPUTS}
        mem.step(*clip)
        got = mem.read()
        for n in MEMORY_INPUTS:
            np.testing.assert_array_equal(got[n], state[n])


def test_reset_and_load(sampler):
    mem = TokenMemory(sampler)
    rng = np.random.default_rng(3)
    mem.step(*_clip(rng))
    saved = mem.read()
    mem.reset()
    assert mem.read()["mem_valid"].sum() == 0
    mem.load(saved)
    for n in MEMORY_INPUTS:
        np.testing.assert_array_equal(mem.read()[n], saved[n])
    with pytest.raises(ValueError, match="shape"):
        mem.load({**saved, "mem": saved["mem"][:, :10]})
