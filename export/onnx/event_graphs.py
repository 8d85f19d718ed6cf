"""The event head's optional bundle graph, "event_head": one frame's patch tokens in, per-cell item
detections, zones and the frame's scanner light out (export/model/event_head.py).

The weights come from an events file (format lvm-events/1) trained by lvm-train's event stage on the
checkpoint's frozen backbone; lvm-export finds it beside the checkpoint and exports it when it is
there. The graph's batch axis is frames ("n_frames"). Parity reads real tokens: the calibration
stream's clips, as the FP32 backbone encoded them for the sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.backends.bundle import CONTRACT, EVENT_GRAPHS, OPTIONAL
from edge_runtime.config import ModelConfig
from export.cli.common import UsageError
from edge_runtime.items.head_decode import OUTPUTS
from export.model.event_head import EVENTS_FORMAT
from export.onnx.graphs import GraphSpec, export_module
from export.train.event_defaults import default_events_path

EVENT_HEAD = GraphSpec("event_head", tuple(CONTRACT["event_head"][0]), tuple(CONTRACT["event_head"][1]))
# with the memory reader's identity (bundle.py OPTIONAL): det_embed per cell, crop_embed per input
IDENTITY = tuple(OPTIONAL["event_head"][1])
EVENT_HEAD_IDENTITY = GraphSpec("event_head", EVENT_HEAD.inputs, EVENT_HEAD.outputs + IDENTITY)
EVENT_SPECS = (EVENT_HEAD,)
assert tuple(s.name for s in EVENT_SPECS) == EVENT_GRAPHS and EVENT_HEAD.outputs == OUTPUTS


@dataclass
class EventsFile:
    """A loaded events file: the head, its metadata, where it came from."""
    path: Path
    shown: str
    sha256: str
    head: nn.Module
    meta: dict
    # the memory reader exported beside it (export.onnx.reader_graphs.ReaderFile): its token identity and
    # crop embedding join the graph (det_embed, crop_embed), so an item's track matches a catalog picture
    reader: object | None = None


def open_events(checkpoint: Path, cfg: ModelConfig, products: list[str], *, shown_root: Path | None = None) -> EventsFile | None:
    """The checkpoint's events file (``<stem>-events.safetensors`` beside it), or None when there is
    none. One that is damaged, or was trained for another model, checkpoint or product list, is a
    UsageError of one line (exit 2)."""
    from edge_runtime.file_hash import sha256_file
    from export.model.event_head import load_event_head

    path = default_events_path(checkpoint)
    if not path.is_file():
        return None
    flag = f"{path} (the checkpoint's event head)"
    again = (f"train it again (lvm-train --config {cfg.name} --events-only --init-from {checkpoint} --out "
             f"{checkpoint.parent}) or move it away")
    try:
        head, meta = load_event_head(path, cfg.backbone.dim, cfg.backbone.grid)
    except ValueError as err:
        raise UsageError(f"{flag}: {' '.join(str(err).split()).removeprefix(str(path) + ': ')}") from None
    if meta.get("config_sha256") != cfg.digest():
        raise UsageError(f"{flag}: trained for another model config; {again}")
    trained_on = meta.get("checkpoint_sha256")
    if trained_on and trained_on != sha256_file(checkpoint):
        raise UsageError(f"{flag}: trained on the backbone of another checkpoint (sha256 {trained_on[:12]}); {again}")
    if products and list(meta["classes"]) != list(products):
        raise UsageError(f"{flag}: its {len(meta['classes'])} product classes are not the checkpoint's "
                         f"{len(products)} products; {again}")
    if not isinstance(meta.get("threshold"), (int, float)):
        raise UsageError(f"{flag}: an incomplete event head file (no threshold); {again}")
    try:
        shown = str(path.resolve().relative_to(shown_root)) if shown_root else str(path)
    except ValueError:
        shown = str(path)
    return EventsFile(path, shown, sha256_file(path), head.eval(), meta)


def events_section(ef: EventsFile) -> dict:
    """The manifest's "events" block: what the runtime needs beside the graph, and how it was measured."""
    meta = ef.meta
    return {"format": EVENTS_FORMAT, "file": ef.shown, "file_sha256": ef.sha256, "config": meta["event_config"],
            "event_fps": float(meta["event_config"]["event_fps"]), "threshold": float(meta["threshold"]),
            "classes": list(meta["classes"]), "zones": list(meta["zones"]), "light_states": list(meta["light_states"]),
            "heldout": meta.get("heldout"), "trained": meta.get("train"), **identity_section(ef)}


def identity_section(ef: EventsFile) -> dict:
    """{"identity": ...} when the graph carries the reader's identity, else {}."""
    rf = ef.reader
    if rf is None:
        return {}
    return {"identity": {"dim": int(rf.reader.rc.embed), "reader_sha256": rf.sha256,
                         "det_embed": "the memory reader's token identity of each cell's token (unit rows)",
                         "crop_embed": "the memory reader's crop embedding of the input read as one product's "
                                       "picture (unit rows): what a catalog picture is matched by"}}


def event_spec(ef: EventsFile) -> GraphSpec:
    """The graph's I/O: the head's, and the identity's when the reader is exported beside it."""
    return EVENT_HEAD_IDENTITY if ef.reader is not None else EVENT_HEAD


class EventGraph(nn.Module):
    """The head with its outputs as a tuple in the contract's order; with ``reader`` (a MemoryReader), then
    the reader's token identity per cell and its crop embedding of the whole input. The reader was trained
    to match the one against the other, which is how its object answers find a pictured product; here
    they let an item's track (det_embed) be matched against a catalog picture fed as one input
    (crop_embed). The crop embedding of a camera frame means nothing and the runtime does not read it:
    it costs two small layers over 49 tokens, less than a second graph and its session would."""

    def __init__(self, head: nn.Module, reader: nn.Module | None = None) -> None:
        super().__init__()
        self.head, self.reader = head, reader

    def forward(self, tokens):
        out = self.head(tokens)
        outs = tuple(out[n] for n in OUTPUTS)
        if self.reader is None:
            return outs
        return outs + (self.reader.token_ident(tokens), self.reader.embed_crop(tokens))


def graph_module(ef: EventsFile) -> nn.Module:
    return EventGraph(ef.head, ef.reader.reader.eval() if ef.reader is not None else None).eval()


def example_feeds(cfg: ModelConfig, frames: int = 2) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    return {"tokens": torch.randn(frames, cfg.backbone.tokens_per_frame, cfg.backbone.dim, generator=g).numpy()}


def real_feeds(sampler_feeds: list[dict[str, np.ndarray]], cfg: ModelConfig) -> list[dict[str, np.ndarray]]:
    """Each sampler call's clip (the FP32 backbone's tokens of T stream frames) as one event-head call."""
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    return [{"tokens": np.ascontiguousarray(f["clip"][0].reshape(-1, P, d), np.float32)} for f in sampler_feeds]


def export_graph(ef: EventsFile, cfg: ModelConfig, path: Path) -> Path:
    # two frames: a traced size of 1 would be specialised to a constant, losing the axis
    feed = example_feeds(cfg, frames=2)
    return export_module(graph_module(ef), (torch.from_numpy(feed["tokens"]),), event_spec(ef), path,
                         shapes={"tokens": {0: "n_frames"}})
