"""Parity of one export's graphs against PyTorch: the inputs they are checked on and PyTorch's
outputs on those inputs, computed once per export and shared by every graph checked against them
(the FP32 graphs, the bundle's graphs, each INT8 candidate)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# real calls per graph, spread over the calibration stream, on top of the example inputs
PARITY_CALLS = {"backbone": 8, "sampler": 8, "heads": 4, "reader": 4, "answer": 4, "event_head": 4}


def spread(items: list, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced from the first to the last."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


class ParityCheck:
    """``inputs[name]``: the example inputs, then real calls from the stream (``feeds``) when frames were read.
    ``reader``: the memory reader's file (export.onnx.reader_graphs.ReaderFile) when its graphs are exported;
    ``events``: the event head's file (export.onnx.event_graphs.EventsFile) when its graph is."""

    def __init__(self, net, feeds, threads: int, reader=None, events=None) -> None:
        from export.onnx import reader_graphs
        from export.onnx.graphs import example_feeds, graph_specs

        self.net = net
        self.threads = threads
        self.specs = {s.name: s for s in graph_specs(net)}
        self.modules: dict[str, object] = {}
        self.inputs: dict[str, list] = {}
        for spec in self.specs.values():
            self.inputs[spec.name] = [example_feeds(net, spec)] + self._real(feeds, spec.name)
        if reader is not None:
            for spec in reader_graphs.READER_SPECS:
                self.specs[spec.name] = spec
                self.modules[spec.name] = reader_graphs.graph_module(reader, spec)
                self.inputs[spec.name] = ([reader_graphs.example_feeds(reader, net.cfg, spec)]
                                          + self._real(feeds, spec.name))
        if events is not None:  # real calls: the stream's clips, each clip's frames one call
            from export.onnx import event_graphs

            spec = event_graphs.event_spec(events)
            self.specs[spec.name] = spec
            self.modules[spec.name] = event_graphs.graph_module(events)
            real = event_graphs.real_feeds(feeds.sampler, net.cfg) if feeds is not None else []
            self.inputs[spec.name] = [event_graphs.example_feeds(net.cfg)] + spread(real, PARITY_CALLS[spec.name])
        self._refs: dict[str, list] = {}

    @staticmethod
    def _real(feeds, name: str) -> list:
        return spread(getattr(feeds, name), PARITY_CALLS[name]) if feeds is not None else []

    def refs(self, name: str) -> list:
        """PyTorch's outputs on ``inputs[name]``."""
        from export.onnx.parity import reference_outputs

        if name not in self._refs:
            self._refs[name] = reference_outputs(self.net, self.specs[name], self.inputs[name],
                                                 self.modules.get(name))
        return self._refs[name]

    def measure(self, spec, onnx_path: Path) -> dict:
        """``export.onnx.parity.graph_parity`` of one ONNX graph on this export's inputs."""
        from export.onnx.parity import graph_parity

        # the first input is the example (two random images); the backbone's frame-to-frame error reads
        # the stream's calls after it
        real = 1 if len(self.inputs[spec.name]) > 1 else 0
        return graph_parity(self.net, spec, onnx_path, self.inputs[spec.name], threads=self.threads,
                            refs=self.refs(spec.name), module=self.modules.get(spec.name), motion_from=real)
