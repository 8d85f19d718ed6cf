"""The memory reader's pair of bundle graphs: "reader" (once per commit) and "answer" (per query batch).

The weights come from a reader file (export/model/reader.py, format lvm-reader/1) trained for the
checkpoint's model config. ``reader`` is ``MemoryReader.forward`` with a batch axis "streams";
``answer`` is the query crop's embedding (``MemoryReader.embed_crop``) followed by ``AnswerStep`` in
one module, so the runtime feeds crop tokens as it does to the heads, with a query axis "queries".
Names, order and dtypes come from the runtime's table (``edge_runtime.backends.bundle.CONTRACT``).

Real inputs for parity and latency are the calibration stream's own memories: the head calls that
``export.onnx.calibration.build_feeds`` made carry each committed memory, its SVD state and a query
batch with crops cut from the frames; the FP32 reader graph turns each memory into the facts the
answer graph is then checked on, as the runtime would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.backends.bundle import (
    CONTRACT,
    LONGEST_WINDOW_S,
    READER_FORMAT,
    READER_GRAPHS,
)
from edge_runtime.config import ModelConfig
from edge_runtime.memory.timeline import TimelineSpec, check_horizon
from export.cli.common import UsageError
from export.onnx.graphs import GraphSpec, export_module

READER = GraphSpec("reader", tuple(CONTRACT["reader"][0]), tuple(CONTRACT["reader"][1]))
ANSWER = GraphSpec("answer", tuple(CONTRACT["answer"][0]), tuple(CONTRACT["answer"][1]))
READER_SPECS = (READER, ANSWER)
assert tuple(s.name for s in READER_SPECS) == READER_GRAPHS
FACTS = READER.outputs
# "not seen" when the calibrated p(seen) of the query's type is below this
NOT_SEEN_BELOW = 0.5


@dataclass
class ReaderFile:
    """A loaded reader file: the two modules, its metadata, where it came from."""
    path: Path
    shown: str
    sha256: str
    reader: nn.Module
    answer: nn.Module
    meta: dict
    timeline: TimelineSpec | None = None  # the timeline track the bundle's answer step reads, if any


def default_reader_path(checkpoint: Path) -> Path:
    """``<checkpoint dir>/<checkpoint stem>-reader.safetensors``: where lvm-train's reader stage writes it."""
    return checkpoint.with_name(f"{checkpoint.stem}-reader.safetensors")


def open_reader(path: Path | None, checkpoint: Path, cfg: ModelConfig, *, disabled: bool,
                shown_root: Path | None = None, timeline: bool = True) -> ReaderFile | None:
    """The reader to export beside the heads: ``path`` (--reader), else the checkpoint's companion file
    when it exists; None with --no-reader or when there is none. A file that is not a reader, or was
    trained for another model config, is a UsageError of one line (exit 2)."""

    from edge_runtime.file_hash import sha256_file
    from export.model.reader import load_reader

    if disabled:
        return None
    if path is None:
        path = default_reader_path(checkpoint)
        if not path.is_file():
            return None
        flag = f"{path} (the checkpoint's reader)"
    else:
        flag = f"--reader {path}"
        if not path.is_file():
            raise UsageError(f"{flag}: no such file")
    hint = "" if flag.startswith("--reader") else " (pass --reader PATH, or --no-reader for the heads only)"
    try:
        reader, answer, meta = load_reader(path, cfg)
    except ValueError as err:  # not a reader, or trained for another model config
        msg = " ".join(str(err).split())
        raise UsageError(f"{flag}: {msg.removeprefix(str(path) + ': ')}{hint}") from None
    except (OSError, KeyError, RuntimeError) as err:  # unreadable weights or metadata (read_reader_file names the rest)
        raise UsageError(f"{flag}: not a readable reader file ({' '.join(str(err).split())[:160]})") from None
    missing = [k for k in ("prior", "calibration", "config_sha256") if k not in meta]
    cal = meta.get("calibration")
    if not missing and not (isinstance(cal, dict) and all(
            isinstance(cal.get(t), dict) and {"seen", "right"} <= set(cal[t]) for t in ("activity", "object", "time"))):
        missing.append("calibration curves")
    if missing:
        raise UsageError(f"{flag}: an incomplete reader file (no {', '.join(missing)}); train it with the reader stage")
    trained_on = meta.get("checkpoint_sha256")
    if trained_on and trained_on != sha256_file(checkpoint):
        raise UsageError(f"{flag}: trained on the memories of another checkpoint (sha256 {trained_on[:12]}; "
                         f"{checkpoint} is {sha256_file(checkpoint)[:12]}): train its reader again (lvm-train "
                         f"--resume into its folder) or pass --no-reader")
    if len(meta["prior"]) != cfg.heads.num_activities:
        raise UsageError(f"{flag}: its class prior has {len(meta['prior'])} classes, the model has "
                         f"{cfg.heads.num_activities}")
    try:
        shown = str(path.resolve().relative_to(shown_root)) if shown_root else str(path)
    except ValueError:
        shown = str(path)
    spec = None
    tl = meta.get("timeline")
    if timeline and isinstance(tl, dict):
        try:
            spec = TimelineSpec.from_manifest(tl, cfg)
            check_horizon(spec.horizon_s, LONGEST_WINDOW_S)
            if spec.per_frame < 1 or not all(isinstance(tl["calibration"].get(t), dict) for t in ("activity", "object", "time")):
                raise ValueError("per_frame < 1 or calibration curves missing")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise UsageError(f"{flag}: its timeline section is not usable ({err}); pass --no-timeline to export "
                             f"without the track") from None
    return ReaderFile(path, shown, sha256_file(path), reader.eval(), answer.eval(), meta, spec)


def answers_section(rf: ReaderFile | None) -> dict:
    """The manifest's "answers" block: the heads' object extents, and the reader's section when there is one."""
    if rf is None:
        return {"object_extent": True, "kind": "heads"}
    meta, cal = rf.meta, rf.meta["calibration"]
    prior_weight = meta.get("prior_weight", cal.get("prior_weight", 0.0))
    extra = {}
    if rf.timeline is not None:  # answers read the timeline beside the memory: their own calibration
        cal = meta["timeline"]["calibration"]
        prior_weight = cal.get("prior_weight", prior_weight)
    if cal.get("prior_weight_by_window"):  # readers calibrated per window length
        extra["prior_weight_by_window"] = [[float(w), float(x)] for w, x in cal["prior_weight_by_window"]]
    if rf.timeline is not None:
        rc = meta["reader_config"]
        widths = {"ident": rc["embed"], "act_logits": len(meta["prior"]), "event_logit": 1, "boxes": 4, "span": 2}
        extra["timeline"] = rf.timeline.manifest(widths)
    return {"object_extent": True, "kind": "reader", "reader": {
        "format": READER_FORMAT, "file": rf.shown, "file_sha256": rf.sha256,
        "config": meta["reader_config"], "config_sha256": meta["config_sha256"],
        "prior": [float(x) for x in meta["prior"]], "prior_weight": float(prior_weight),
        "calibration": {t: cal[t] for t in ("activity", "object", "time")},
        "not_seen_below": NOT_SEEN_BELOW, "trained": meta.get("train"), **extra}}


class AnswerGraph(nn.Module):
    """The crop embedding and the answer step as one graph (the contract's "answer")."""

    def __init__(self, reader: nn.Module, answer: nn.Module) -> None:
        super().__init__()
        self.reader, self.answer = reader, answer

    # named like the contract's inputs, which name the dynamic axes
    def forward(self, ident, act_logits, event_logit, boxes, span, mem_t, mem_valid, q_type, q_activity,
                q_object, q_window):
        return self.answer(ident, act_logits, event_logit, boxes, span, mem_t, mem_valid, q_type, q_activity,
                           self.reader.embed_crop(q_object), q_window)

    def decided(self, ident, act_logits, event_logit, boxes, span, mem_t, mem_valid, q_type, q_activity,
                q_object, q_window):
        """``AnswerStep.decided`` on this graph's inputs (export parity)."""
        return self.answer.decided(ident, act_logits, event_logit, boxes, span, mem_t, mem_valid, q_type,
                                   q_activity, self.reader.embed_crop(q_object), q_window)


def graph_module(rf: ReaderFile, spec: GraphSpec) -> nn.Module:
    # eval: a new wrapper Module starts in training mode, which would switch the reader's dropout on
    return (rf.reader if spec is READER else AnswerGraph(rf.reader, rf.answer)).eval()


def example_inputs(rf: ReaderFile, cfg: ModelConfig, spec: GraphSpec, streams: int = 2, queries: int = 3):
    """Representative inputs for tracing (real-looking ranges; one query of each type, repeated)."""
    g = torch.Generator().manual_seed(0)
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    m, r = cfg.stream.memory_tokens, cfg.svd.n_components
    mem_t = torch.sort(torch.rand(streams, m, generator=g) * 600.0).values
    mem_valid = (torch.rand(streams, m, generator=g) > 0.1).float()
    if spec is READER:
        basis = torch.linalg.qr(torch.randn(d, r, generator=g)).Q.T[None].repeat(streams, 1, 1).contiguous()
        sv = torch.sort(torch.rand(streams, r, generator=g) * 10, descending=True).values
        return (torch.randn(streams, m, d, generator=g), mem_t, torch.randint(0, P, (streams, m), generator=g),
                mem_valid, basis, sv)
    with torch.no_grad():
        facts = rf.reader(*example_inputs(rf, cfg, READER, streams=1))
    q = torch.arange(queries) % 3
    win = torch.tensor([[100.0, 400.0]]).repeat(queries, 1)
    rows = [f[0] for f in facts]
    t, valid = mem_t[0], mem_valid[0]
    if rf.timeline is not None:  # the timeline's rows after the memory's
        rows, t, valid = with_timeline([r.numpy() for r in rows], t.numpy(), valid.numpy(), rf.timeline.capacity)
        rows, t, valid = [torch.from_numpy(r) for r in rows], torch.from_numpy(t), torch.from_numpy(valid)
    return (*rows, t, valid, q, q % cfg.heads.num_activities, torch.randn(queries, P, d, generator=g), win)


def with_timeline(facts: list[np.ndarray], t: np.ndarray, valid: np.ndarray, capacity: int):
    """Facts of one memory (m rows each, in ``FACTS`` order) followed by ``capacity`` timeline rows for
    tracing and parity: the memory's own facts repeated at times spread over the last 30 minutes (real
    values, made-up places), each repeat nudged so that no two rows are copies. Copies tie exactly, and
    which of two equal anchors an answer takes is float rounding's choice, not the export's."""
    m = facts[0].shape[0]
    reps = -(-capacity // m)
    g = np.random.default_rng(0)
    rows = []
    for name, f in zip(FACTS, facts):
        tiled = np.concatenate([f] * reps)[:capacity].astype(np.float32)
        nudge = g.normal(0.0, 0.05, tiled.shape).astype(np.float32)
        if name == "ident":
            tiled = tiled + nudge
            tiled /= np.linalg.norm(tiled, axis=-1, keepdims=True).clip(1e-6)
        elif name == "boxes":
            tiled = np.sort((tiled + nudge).clip(0.0, 1.0).reshape(-1, 2, 2), axis=1).reshape(tiled.shape)
        elif name == "span":
            tiled = (tiled * np.exp(nudge)).astype(np.float32)
        else:  # logits
            tiled = tiled + nudge
        rows.append(np.concatenate([f, tiled.astype(f.dtype)]))
    tl_t = np.linspace(0.0, float(LONGEST_WINDOW_S), capacity, dtype=np.float32)
    return rows, np.concatenate([t, tl_t.astype(t.dtype)]), np.concatenate([valid, np.ones(capacity, valid.dtype)])


def example_feeds(rf: ReaderFile, cfg: ModelConfig, spec: GraphSpec, **kw) -> dict[str, np.ndarray]:
    return {n: a.numpy() for n, a in zip(spec.inputs, example_inputs(rf, cfg, spec, **kw))}


def dynamic_shapes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    if spec is READER:
        return {name: {0: "streams"} for name in spec.inputs}
    # the fact rows too: the runtime feeds only the rows inside the asked windows (reader_query.window_rows)
    return {name: {0: "queries" if name.startswith("q_") else "rows"} for name in spec.inputs}


def export_graph(rf: ReaderFile, cfg: ModelConfig, spec: GraphSpec, path: Path) -> Path:
    # two streams / three queries: a traced size of 1 would be specialised to a constant, losing the axis
    return export_module(graph_module(rf, spec), example_inputs(rf, cfg, spec, streams=2), spec, path,
                         shapes=dynamic_shapes(spec))


def real_feeds(head_feeds: list[dict[str, np.ndarray]], reader_onnx: Path, threads: int,
               timeline: TimelineSpec | None = None) -> tuple[list[dict], list[dict]]:
    """(reader feeds, answer feeds) from the heads' real calls: each call's committed memory and SVD
    state for the reader, and the FP32 reader graph's facts of it with the call's queries for the answer."""
    from edge_runtime.backends.onnxruntime import create_session

    sess = create_session(reader_onnx, threads=threads)[0]  # the runtime's session options, as parity uses
    readers, answers = [], []
    for hf in head_feeds:
        rfeed = {n: hf[n] for n in READER.inputs}
        facts = sess.run(list(FACTS), rfeed)
        rows, t, valid = [f[0] for f in facts], hf["mem_t"][0], hf["mem_valid"][0]
        if timeline is not None:
            rows, t, valid = with_timeline(rows, t, valid, timeline.capacity)
        afeed = dict(zip(FACTS, rows))
        afeed.update({"mem_t": t, "mem_valid": valid})
        afeed.update({n: hf[n] for n in ("q_type", "q_activity", "q_object", "q_window")})
        readers.append(rfeed)
        answers.append(afeed)
    return readers, answers


def streams_batch_match(sess, feeds: list[dict], alone: list[list[np.ndarray]]) -> dict:
    """Every reader feed as one row of ONE batched call vs that memory alone: a specialised batch
    axis, or rows that see each other, shows here."""
    if len(feeds) < 2:
        return {"streams": len(feeds), "max_abs": 0.0, "compared": "one memory: nothing to batch"}
    stacked = {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}
    out = sess.run(list(FACTS), stacked)
    worst, row = 0.0, 0
    for feed, single in zip(feeds, alone):
        rows = feed["mem"].shape[0]
        for a, b in zip(single, out):
            worst = max(worst, float(np.abs(a.astype(np.float64) - b[row : row + rows]).max()))
        row += rows
    return {"streams": row, "max_abs": worst, "compared": "each row of one batched call vs that memory alone"}



# An FP16 reader graph may differ from PyTorch FP32, per output, on average by at most this fraction of
# the output's magnitude (the INT8 dense budget), and at most by FP16_MAX_SCALED anywhere: one answer
# whose anchor flipped to another token moves its interval by seconds, which the mean would hide.
FP16_MEAN_SCALED = 0.005
FP16_MAX_SCALED = 0.02


def fp16_failure(parity: dict) -> str | None:
    """Why an FP16 reader graph is outside its budget (one phrase), or None when it is within."""
    for name, o in parity.get("outputs", {}).items():
        scale = max(1.0, o["ref_max_abs"])
        if o["mean_abs"] / scale > FP16_MEAN_SCALED or o["max_abs"] / scale > FP16_MAX_SCALED:
            return (f"'{name}' mean |d| {o['mean_abs']:.2e}, max |d| {o['max_abs']:.2e} at output scale "
                    f"{scale:.3g}; budget {FP16_MEAN_SCALED:g} / {FP16_MAX_SCALED:g} of the scale")
    sb = parity.get("streams_batch")
    if sb and sb["max_abs"] > FP16_MAX_SCALED:
        return f"rows of one batched call differ from the memories alone by {sb['max_abs']:.2e}"
    return None
