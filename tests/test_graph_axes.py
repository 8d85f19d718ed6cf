"""export_module's dynamic axes (export/onnx/graphs.py): the TorchScript trace runs at sizes other than
the example's, its output axes carry the names of the input axes they follow, and the axes no input
moves are written as sizes."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from export.onnx.graphs import GraphSpec, export_module


class Pair(nn.Module):  # rows follow x's batch, columns w's; a reshape's size stays fixed
    def forward(self, x, w):
        return x @ w.T, x.sum(dim=1), x.reshape(x.shape[0], 2, -1)


SPEC = GraphSpec("pair", ("x", "w"), ("y", "s", "r"))
SHAPES = {"x": {0: "rows"}, "w": {0: "cols"}}


def test_output_axes_are_named_after_the_input_axes_they_follow(tmp_path):
    import onnx

    out = export_module(Pair().eval(), (torch.ones(2, 4), torch.ones(3, 4)), SPEC, tmp_path / "p.onnx", SHAPES)
    dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in onnx.load(str(out)).graph.output}
    assert dims == {"y": ["rows", "cols"], "s": ["rows"], "r": ["rows", 2, 2]}
    x, w = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32), np.ones((1, 4), np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x, "w": w})
    want = [t.numpy() for t in Pair()(torch.from_numpy(x), torch.from_numpy(w))]
    assert all(g.shape == v.shape and np.allclose(g, v, atol=1e-6) for g, v in zip(got, want))
