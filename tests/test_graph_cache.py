"""The exported-graph cache (export/onnx/graph_cache.py): the same module traced again is served from
the cache byte for byte without tracing, anything the graph depends on (weights, attributes, inputs,
dynamic shapes) changes the key, and LVM_EDGE_GRAPH_CACHE=0 traces every time; a traced graph's
dynamic output axes carry the names of the input axes they follow."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from export.onnx import graph_cache
from export.onnx.graphs import GraphSpec, export_module

SPEC = GraphSpec("tiny", ("x",), ("y",))
SHAPES = {"x": {0: torch.export.Dim("n", min=1, max=64)}}
REPO = Path(__file__).resolve().parent.parent


class Scale(nn.Module):
    def __init__(self, factor: float = 2.0) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.factor = factor  # a plain attribute the traced graph bakes in

    def forward(self, x):
        return self.lin(x) * self.factor


def _module(seed: int = 0, factor: float = 2.0) -> Scale:
    torch.manual_seed(seed)
    return Scale(factor).eval()


ARGS = (torch.ones(2, 4),)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LVM_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LVM_EDGE_GRAPH_CACHE", raising=False)
    return tmp_path / "cache" / "graphs"


def test_a_module_traced_again_comes_from_the_cache_unchanged(cache, tmp_path, monkeypatch):
    first = export_module(_module(), ARGS, SPEC, tmp_path / "a.onnx", SHAPES)
    assert len(list(cache.glob("*.onnx"))) == 1
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("traced again"))
    again = export_module(_module(), ARGS, SPEC, tmp_path / "b.onnx", SHAPES)
    assert again.read_bytes() == first.read_bytes()


def test_what_the_graph_depends_on_changes_the_key():
    base = graph_cache.graph_key(_module(), ARGS, "meta")
    assert graph_cache.graph_key(_module(), ARGS, "meta") == base
    assert graph_cache.graph_key(_module(seed=1), ARGS, "meta") != base          # weights
    assert graph_cache.graph_key(_module(factor=3.0), ARGS, "meta") != base      # a plain attribute
    assert graph_cache.graph_key(_module(), (torch.zeros(2, 4),), "meta") != base  # the example inputs
    assert graph_cache.graph_key(_module(), ARGS, "other meta") != base          # names, shapes, opset
    assert graph_cache.graph_key(_module().train(), ARGS, "meta") != base        # train / eval mode
    with_tensor = _module()
    with_tensor.offset = torch.ones(3)  # a plain tensor attribute is traced in as a constant
    other_tensor = _module()
    other_tensor.offset = torch.zeros(3)
    assert graph_cache.graph_key(with_tensor, ARGS, "meta") != graph_cache.graph_key(other_tensor, ARGS, "meta")


def _count_traces(monkeypatch) -> list:
    real, calls = torch.onnx.export, []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_the_key_is_the_same_in_another_process():
    """An attribute without a stable repr (an object printing its address) must not make every run miss."""
    make = "m = _module(); m.info = type('Info', (), {})(); m.info.chs = [64, 128]"
    code = ("import torch, sys; sys.path.insert(0, 'tests'); from test_graph_cache import _module, ARGS; "
            f"from export.onnx.graph_cache import graph_key; {make}; print(graph_key(m, ARGS, 'meta'))")
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            check=True).stdout.strip()
    scope = {"_module": _module, "__name__": "__main__"}  # the class's module as `python -c` names it
    exec(make, scope)  # the same module here, in this process (another address, another hash seed)
    assert theirs == graph_cache.graph_key(scope["m"], ARGS, "meta") and len(theirs) == 32


def test_turned_off_it_traces_every_time(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("LVM_EDGE_GRAPH_CACHE", "0")
    traces = _count_traces(monkeypatch)
    export_module(_module(), ARGS, SPEC, tmp_path / "a.onnx", SHAPES)
    export_module(_module(), ARGS, SPEC, tmp_path / "b.onnx", SHAPES)
    assert len(traces) == 2 and not cache.exists()


def test_the_cache_keeps_the_last_used(cache, monkeypatch):
    monkeypatch.setattr(graph_cache, "KEPT", 2)
    for i in range(3):
        graph_cache._keep(cache / f"{i}.onnx", lambda tmp, i=i: tmp.write_bytes(bytes([i])))
        os.utime(cache / f"{i}.onnx", (1e9 + i, 1e9 + i))  # used in this order, whatever the clock's resolution
    graph_cache._keep(cache / "3.onnx", lambda tmp: tmp.write_bytes(b"\x03"))
    assert sorted(p.name for p in cache.glob("*.onnx")) == ["2.onnx", "3.onnx"]


def test_output_axes_are_named_after_the_input_axes_they_follow(cache, tmp_path):
    import onnx

    class Pair(nn.Module):  # rows follow x's batch, columns w's; a reshape's size stays fixed
        def forward(self, x, w):
            return x @ w.T, x.sum(dim=1), x.reshape(x.shape[0], 2, -1)

    spec = GraphSpec("pair", ("x", "w"), ("y", "s", "r"))
    shapes = {"x": {0: torch.export.Dim("rows", min=1, max=64)}, "w": {0: torch.export.Dim("cols", min=1, max=8)}}
    out = export_module(Pair().eval(), (torch.ones(2, 4), torch.ones(3, 4)), spec, tmp_path / "p.onnx", shapes)
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in onnx.load(str(out)).graph.output}
    assert dims == {"y": ["rows", "cols"], "s": ["rows"], "r": ["rows", 2, 2]}
