"""The event head: per-frame item detections, the scanner light and the counter's zones from one
frame's patch tokens.

The memory path samples the stream at the model's fps (lvm-tiny: 1 fps), which misses a scanner
flash (0.35 s) two times in three and cannot follow an item. The event path runs frames at
``event_fps`` through the same frozen backbone and this light head on each frame's P = G x G patch
tokens (lvm-tiny: 7 x 7 tokens of width 256). Per cell of the grid it gives:

- ``det_score`` (N, P): p(an item's box centre lies in this cell);
- ``det_box`` (N, P, 4): that item's box, x1, y1, x2, y2 in [0, 1] of the frame (decoded here from a
  centre offset inside the cell and a log size, so the runtime reads boxes as they are);
- ``det_class`` (N, P, K): which product it is (softmax over the bundle's K product labels);
- ``det_held`` (N, P): p(it is held in a hand);
- ``zone`` (N, P, 5): p(the cell shows none / basket / scanner / counter / bag);

and per frame ``light`` (N, 3): p(scanner light off / green / red), read from the pooled cells (max
pooling: the flash lights a few cells only). Every output is a probability and every shape is static
but the batch, so the module exports to ONNX as it is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# the runtime's names, in the columns' order: zone_p's and light_p's of edge_runtime/items/detections.py
from edge_runtime.items.detections import LIGHTS, ZONE_CLASSES

EVENTS_FORMAT = "lvm-events/1"
# a box's log size is clamped to this range (in cells) so that exp never overflows in any precision
_LOG_SIZE = (-4.0, 3.0)
_DROPOUT = 0.1


@dataclass(frozen=True)
class EventHeadConfig:
    d_model: int = 128
    layers: int = 3           # 3x3 convolutions over the grid
    event_fps: float = 5.0    # the rate the runtime's event path samples frames at

    def __post_init__(self) -> None:
        if not (isinstance(self.d_model, int) and self.d_model >= 8):
            raise ValueError(f"event head config: d_model must be a whole number >= 8, got {self.d_model!r}")
        if not (isinstance(self.layers, int) and self.layers >= 1):
            raise ValueError(f"event head config: layers must be a whole number >= 1, got {self.layers!r}")
        if not self.event_fps > 0:
            raise ValueError(f"event head config: event_fps must be positive, got {self.event_fps!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> EventHeadConfig:
        return cls(**saved)


class EventHead(nn.Module):
    """tokens (N, P, d) -> the six outputs of the module docstring, as a dict of probabilities."""

    def __init__(self, dim: int, grid: int, num_classes: int, ec: EventHeadConfig = EventHeadConfig()) -> None:
        super().__init__()
        D = ec.d_model
        self.ec, self.dim, self.grid, self.K = ec, dim, grid, num_classes
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, D))
        # training only (no weights, nothing in the exported graph): the head must not lean on a few features
        self.drop = nn.Dropout(_DROPOUT)
        # where a cell is matters (zones are places; the camera barely moves): a learned embedding per cell
        self.pos = nn.Parameter(torch.zeros(grid * grid, D))
        self.convs = nn.ModuleList(nn.Conv2d(D, D, 3, padding=1) for _ in range(ec.layers))
        self.act = nn.GELU()
        # per cell: score 1, box 4, class K, held 1, zone 5
        self.cell = nn.Conv2d(D, 1 + 4 + num_classes + 1 + len(ZONE_CLASSES), 1)
        self.light = nn.Sequential(nn.Linear(2 * D, D), nn.GELU(), nn.Linear(D, len(LIGHTS)))
        nn.init.normal_(self.pos, std=0.02)
        with torch.no_grad():  # items are rare among cells: start at p ~ 0.01 (RetinaNet's prior)
            self.cell.bias[0] = -4.6
        rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        self.register_buffer("cell_x", cols.reshape(-1).float(), persistent=False)
        self.register_buffer("cell_y", rows.reshape(-1).float(), persistent=False)

    def logits(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw outputs training reads: score / held / class / zone / light logits, decoded boxes."""
        G, K = self.grid, self.K
        h = self.drop(self.inp(tokens)) + self.pos  # (N, P, D)
        x = h.transpose(1, 2).reshape(h.shape[0], -1, G, G)
        for conv in self.convs:
            x = x + self.act(conv(x))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        out = self.cell(x).flatten(2).transpose(1, 2)  # (N, P, 1 + 4 + K + 1 + 5)
        off = torch.sigmoid(out[..., 1:3])
        size = torch.exp(out[..., 3:5].clamp(*_LOG_SIZE)) / G
        cx = (self.cell_x + off[..., 0]) / G
        cy = (self.cell_y + off[..., 1]) / G
        box = torch.stack([cx - size[..., 0] / 2, cy - size[..., 1] / 2, cx + size[..., 0] / 2,
                           cy + size[..., 1] / 2], dim=-1).clamp(0.0, 1.0)
        return {"score": out[..., 0], "box": box, "class": out[..., 5:5 + K], "held": out[..., 5 + K],
                "zone": out[..., 6 + K:], "light": self.light(pooled)}

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        lg = self.logits(tokens)
        return {"det_score": torch.sigmoid(lg["score"]), "det_box": lg["box"],
                "det_class": torch.softmax(lg["class"], dim=-1), "det_held": torch.sigmoid(lg["held"]),
                "light": torch.softmax(lg["light"], dim=-1), "zone": torch.softmax(lg["zone"], dim=-1)}


def save_event_head(path, head: EventHead, meta: dict) -> None:
    """safetensors, never pickle: the head's weights and JSON metadata (its config, the classes, the
    checkpoint it reads the tokens of, the recommended threshold, how it was trained and measured)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from edge_runtime.atomic_write import atomic_writer

    state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    md = {"format": EVENTS_FORMAT, "event_config": json.dumps(head.ec.to_dict())}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=md)


def load_event_head(path, dim: int, grid: int) -> tuple[EventHead, dict]:
    """-> (head in eval mode, metadata with JSON values decoded). ValueError (one line) for a missing,
    damaged or foreign file, or one whose tensors do not fit a backbone of width ``dim``."""
    import json

    from export.model.checkpoint import read_format_file

    md, state = read_format_file(path, EVENTS_FORMAT, "an event head file")
    meta = {}
    for k, v in md.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            meta[k] = v
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"{path}: an event head file without its class names")
    head = EventHead(dim, grid, len(classes), EventHeadConfig.from_dict(meta["event_config"]))
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: its tensors do not fit a backbone of width {dim} on a {grid}x{grid} grid "
                         f"({str(err).splitlines()[0][:100]})") from None
    return head.eval(), meta
