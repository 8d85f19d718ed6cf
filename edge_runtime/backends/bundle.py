"""Bundles: load the manifest, check it against the graph contract and the host, in one line.

A bundle is a folder written by ``lvm-export`` (engines/README.md). Before anything is loaded the
runtime checks, in this order: the manifest exists and parses, its format is one we read, its
model config validates, every graph of the contract is listed with the contract's tensor names and
dtypes, the files exist and their sha256 still match the manifest (a stale or edited graph is never
silently used), and -- for TensorRT -- each plan's TensorRT version and compute capability match
the host. A bundle may also carry the memory reader's pair of graphs ("reader" and "answer",
manifest ``answers.kind`` "reader"); then its manifest's reader section (sizes, class prior,
calibration) must agree with those graphs. Every failure is a ``BundleError`` whose message is one
line saying what differs.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.backends.base import TensorMeta
from edge_runtime.config import ConfigError, ModelConfig, model_config_from_dict
from edge_runtime.file_hash import sha256_file
from edge_runtime.backends.calibration_format import is_curve, right_model_problem, seen_model_problem

MANIFEST = "manifest.json"
FORMAT = 1
# The graph I/O contract, written once: each graph's input and output names in the order the graph
# declares them, and the dtypes the runtime accepts for each. lvm-export (export/onnx/graphs.py) builds
# its graphs from this table, so a bundle and the runtime that loads it cannot disagree on the names.
GRAPH_NAMES = ("backbone", "sampler", "heads")
_F = ("float32", "float16")  # float tensors may be carried in half precision by an fp16 export
CONTRACT: dict[str, tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {
    "backbone": ({"frames": ("uint8",)}, {"tokens": _F}),
    "sampler": ({"mem": _F, "mem_t": _F, "mem_p": ("int64",), "mem_valid": _F, "clip": _F, "clip_t": _F,
                 "clip_p": ("int64",)},
                {"new_mem": _F, "new_mem_t": _F, "new_mem_p": ("int64",), "new_mem_valid": _F}),
    "heads": ({"mem": _F, "mem_t": _F, "mem_p": ("int64",), "mem_valid": _F, "svd_basis": _F, "svd_sv": _F,
               "q_type": ("int64",), "q_activity": ("int64",), "q_object": _F, "q_window": _F, "q_times": _F,
               "q_mask": _F},
              {"activity_logits": _F, "boxes": _F, "start_logits": _F, "end_logits": _F}),
}
# The memory reader's optional graph pair (both or neither; manifest answers.kind "reader"): "reader"
# turns a committed memory into per-token facts once per commit (batch axis "streams"), "answer"
# answers a batch of queries (axis "queries") from one memory's facts. q_object is the query crop's
# backbone tokens (zeros when the type takes none); q_type ids are edge_runtime/query/types.py's.
READER_GRAPHS = ("reader", "answer")
_FACTS = {"ident": _F, "act_logits": _F, "event_logit": _F, "boxes": _F, "span": _F}
CONTRACT.update({
    "reader": ({"mem": _F, "mem_t": _F, "mem_p": ("int64",), "mem_valid": _F, "svd_basis": _F, "svd_sv": _F},
               dict(_FACTS)),
    "answer": ({**_FACTS, "mem_t": _F, "mem_valid": _F, "q_type": ("int64",), "q_activity": ("int64",),
                "q_object": _F, "q_window": _F},
               {"activity_scores": _F, "intervals": _F, "keyboxes": _F, "evidence": _F}),
})
# The event head's optional graph (manifest "events"): one frame's patch tokens (axis "n_frames") in; per
# grid cell p(an item's box centre), its box, product, p(held) and zone, and the frame's scanner light out.
EVENT_GRAPHS = ("event_head",)
CONTRACT["event_head"] = ({"tokens": _F}, {"det_score": _F, "det_box": _F, "det_class": _F, "det_held": _F,
                                          "light": _F, "zone": _F})
# Optional I/O, all of a graph's or none: a sampler with a recurrent state of its own (sampler.kind s5)
# reads it after the clip inputs and writes the next one after the memory outputs; an event head exported
# with the memory reader (manifest events.identity) adds the reader's identity: det_embed (N, P, E) per
# cell, the reader's token identity of each cell's token, and crop_embed (N, E), the reader's crop
# embedding of the whole input read as a picture of one product (what a catalog picture is matched by).
OPTIONAL: dict[str, tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {
    "sampler": ({"sampler_state": _F}, {"new_sampler_state": _F}),
    "event_head": ({}, {"det_embed": _F, "crop_embed": _F}),
}
ANSWER_KINDS = ("heads", "reader")
READER_FORMAT = "lvm-reader/1"


def contract_io(name: str, with_optional: bool) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """A graph's (inputs, outputs) -> accepted dtypes, in order; ``with_optional`` adds its optional pair."""
    ins, outs = dict(CONTRACT[name][0]), dict(CONTRACT[name][1])
    if with_optional and name in OPTIONAL:
        ins.update(OPTIONAL[name][0])
        outs.update(OPTIONAL[name][1])
    return ins, outs


class BundleError(ValueError):
    """A bundle that cannot be used on this host; the message is one line."""


@dataclass(frozen=True)
class GraphInfo:
    name: str
    onnx: Path
    sha256: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    plan: dict[str, Any] | None = None
    quantization: Any = None

    @property
    def plan_path(self) -> Path | None:
        if not self.plan:
            return None
        return self.onnx.parent / str(self.plan.get("path", f"{self.name}.plan"))


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    cfg: ModelConfig
    graphs: dict[str, GraphInfo]
    labels: dict[str, list[str]] = field(default_factory=dict)
    # the optional event head (manifest "events"): opened on demand, beside the memory path's graphs
    event_head: GraphInfo | None = None

    @property
    def model(self) -> str:
        return str(self.manifest.get("model", self.cfg.name))

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "?"))

    @property
    def object_extent(self) -> bool:
        """Whether object answers can carry an extent (heads trained for it; older bundles not)."""
        return bool((self.manifest.get("answers") or {}).get("object_extent", False))

    @property
    def answers_kind(self) -> str:
        """Which answers the bundle offers beyond the heads: "reader" when it carries the reader pair."""
        return str((self.manifest.get("answers") or {}).get("kind", "heads"))

    @property
    def reader(self) -> dict[str, Any] | None:
        """The manifest's reader section (config, prior, calibration, not_seen_below), or None."""
        return (self.manifest.get("answers") or {}).get("reader") if self.answers_kind == "reader" else None

    @property
    def timeline(self) -> dict[str, Any] | None:
        """The reader's timeline track (manifest answers.reader.timeline: per_frame, horizon_s, tokens), or None."""
        sec = self.reader
        return sec.get("timeline") if isinstance(sec, dict) and isinstance(sec.get("timeline"), dict) else None

    @property
    def events(self) -> dict[str, Any] | None:
        """The manifest's events section (event_fps, threshold, classes, zones, light_states) when the
        bundle carries the event head, else None."""
        return self.manifest.get("events") if self.event_head is not None else None

    @property
    def has_plans(self) -> bool:
        # the reader pair runs on ONNX Runtime on every host (small graphs, dynamic query axis)
        return all(self.graphs[n].plan for n in GRAPH_NAMES)

    @property
    def sampler_state_bytes(self) -> int:
        """Bytes of the sampler's own recurrent state per stream (0 for a sampler without one)."""
        t = next((t for t in self.graphs["sampler"].inputs if t.name == "sampler_state"), None)
        if t is None:
            return 0
        return math.prod(int(d) for d in t.shape[1:]) * t.dtype.itemsize

    @property
    def sampler_batches_streams(self) -> bool:
        """Whether one sampler call may carry the clips of many streams (one row each): its graph has
        a named batch axis (older bundles have a fixed 1) and no per-call activation quantisation,
        whose scale, taken over the whole batch, would let one stream change what another keeps."""
        g = self.graphs["sampler"]
        mem = next(t for t in g.inputs if t.name == "mem")
        per_call = isinstance(g.quantization, dict) and g.quantization.get("mode") == "dynamic"
        return not isinstance(mem.shape[0], int) and not per_call

    @property
    def bundle_id(self) -> str:
        """Names the exact graphs: a snapshot restores only into the bundle that wrote it."""
        h = hashlib.sha256()
        h.update(str(self.manifest.get("config_sha256", self.cfg.digest())).encode())
        for name, g in self.graphs.items():
            h.update(name.encode() + b":" + g.sha256.encode())
        return f"{self.model}-{self.precision}@{h.hexdigest()[:16]}"

    def describe(self) -> str:
        plans = "with TensorRT plans" if self.has_plans else "ONNX only"
        return f"{self.model} {self.precision} ({plans}) at {self.path}"


def _io(graph: str, entries: Any, where: str) -> tuple[TensorMeta, ...]:
    if not isinstance(entries, list):
        raise BundleError(f"{where}: '{graph}' I/O list missing")
    try:
        return tuple(TensorMeta.from_manifest(e) for e in entries)
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{where}: '{graph}' has a malformed tensor entry ({err})") from None


def _check_contract(name: str, inputs, outputs, where: str) -> None:
    opt_in, opt_out = OPTIONAL.get(name, ({}, {}))
    present = {t.name for t in (*inputs, *outputs)} & {*opt_in, *opt_out}
    if present and present != {*opt_in, *opt_out}:
        raise BundleError(f"{where}: {name} graph has only part of {', '.join([*opt_in, *opt_out])}; a broken export")
    want_in, want_out = contract_io(name, bool(present))
    for kind, want, got in (("input", want_in, inputs), ("output", want_out, outputs)):
        have = {t.name: t for t in got}
        missing = [n for n in want if n not in have]
        if missing:
            raise BundleError(f"{where}: {name} graph lacks {kind}(s) {', '.join(missing)} "
                              f"(has {', '.join(have) or 'none'}); not a bundle for this runtime")
        for n, dtypes in want.items():
            if have[n].dtype.name not in dtypes:
                raise BundleError(f"{where}: {name} {kind} '{n}' is {have[n].dtype.name}, the runtime needs "
                                  f"{' or '.join(dtypes)}")


def _check_shapes(cfg: ModelConfig, graphs: dict[str, GraphInfo], where: str) -> None:
    S, P, d = cfg.backbone.image_size, cfg.backbone.tokens_per_frame, cfg.backbone.dim
    m, k = cfg.stream.memory_tokens, cfg.clip_tokens
    # a named axis matches any size: the sampler's batch is "n_streams" in bundles that batch streams
    expect = {("backbone", "frames"): (None, S, S, 3), ("backbone", "tokens"): (None, P, d),
              ("sampler", "mem"): (1, m, d), ("sampler", "clip"): (1, k, d), ("heads", "mem"): (1, m, d)}
    state = next((t for t in graphs["sampler"].inputs if t.name == "sampler_state"), None)
    if cfg.sampler.kind == "s5":
        if state is None:
            raise BundleError(f"{where}: the config's sampler is s5 but the sampler graph carries no sampler_state; "
                              f"the graphs were not exported from this config")
        sc = cfg.sampler
        expect[("sampler", "sampler_state")] = (1, P, sc.layers, sc.d_model, 2 * sc.state_size)
    elif state is not None:
        raise BundleError(f"{where}: the sampler graph carries a sampler_state but the config's sampler is "
                          f"{cfg.sampler.kind}, which has none; the graphs were not exported from this config")
    for (g, n), shape in expect.items():
        meta = next(t for t in graphs[g].inputs + graphs[g].outputs if t.name == n)
        got = tuple(x if isinstance(x, int) else None for x in meta.shape)
        if len(got) != len(shape) or any(a is not None and b is not None and a != b for a, b in zip(got, shape)):
            raise BundleError(f"{where}: {g} '{n}' is {meta.describe()} but the config '{cfg.name}' needs "
                              f"[{','.join('?' if x is None else str(x) for x in shape)}]")


def _answers_kind(manifest: dict, graphs_m: dict, where: str) -> str:
    """answers.kind ("heads" when absent), consistent with the graphs the manifest lists."""
    answers = manifest.get("answers")
    if answers is None:
        answers = {}
    if not isinstance(answers, dict):
        raise BundleError(f"{where}: 'answers' is not an object")
    kind = answers.get("kind", "heads")
    if kind not in ANSWER_KINDS:
        raise BundleError(f"{where}: answers.kind {kind!r} is not one of {', '.join(ANSWER_KINDS)}")
    listed = [n for n in READER_GRAPHS if n in graphs_m]
    if kind == "reader" and len(listed) < len(READER_GRAPHS):
        raise BundleError(f"{where}: answers.kind is reader but the bundle lacks the "
                          f"{' and '.join(n for n in READER_GRAPHS if n not in listed)} graph(s); a broken export")
    if kind != "reader" and listed:
        raise BundleError(f"{where}: the bundle lists the {' and '.join(listed)} graph(s) but answers.kind is "
                          f"{kind}; a broken export")
    return kind


def _reader_mismatch(where: str, what: str) -> BundleError:
    return BundleError(f"{where}: a bundle whose reader does not match its config ({what})")


def _check_reader(cfg: ModelConfig, sec: Any, graphs: dict[str, GraphInfo], where: str) -> None:
    """The manifest's reader section is complete and its sizes are the reader graphs' sizes."""
    if not isinstance(sec, dict):
        raise BundleError(f"{where}: answers.kind is reader but answers.reader is missing")
    if sec.get("format") != READER_FORMAT:
        raise BundleError(f"{where}: answers.reader.format {sec.get('format')!r}, this runtime reads {READER_FORMAT}")
    rc = sec.get("config")
    if not isinstance(rc, dict) or not all(isinstance(rc.get(k), int) for k in ("embed", "ranked", "keyframes")):
        raise BundleError(f"{where}: answers.reader.config needs integer embed, ranked and keyframes")
    C, m, d = cfg.heads.num_activities, cfg.stream.memory_tokens, cfg.backbone.dim
    E, K, S = rc["embed"], rc["ranked"], rc["keyframes"]
    prior = sec.get("prior")
    if not isinstance(prior, list) or len(prior) != C or not all(isinstance(x, (int, float)) for x in prior):
        raise _reader_mismatch(where, f"prior has {len(prior) if isinstance(prior, list) else 0} numbers, "
                                      f"the model has {C} activities")
    for key in ("prior_weight", "not_seen_below"):
        if not isinstance(sec.get(key), (int, float)) or isinstance(sec.get(key), bool):
            raise BundleError(f"{where}: answers.reader.{key} is not a number")
    by_window = sec.get("prior_weight_by_window")
    if by_window is not None and not (isinstance(by_window, list) and by_window and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)
            and p[0] > 0 and p[1] >= 0 for p in by_window)):
        raise BundleError(f"{where}: answers.reader.prior_weight_by_window needs [window seconds > 0, weight >= 0] pairs")
    cal = sec.get("calibration")
    if not isinstance(cal, dict) or not all(isinstance(cal.get(t), dict) and all(
            is_curve(cal[t].get(c)) for c in ("seen", "right")) for t in ("activity", "object", "time")):
        raise BundleError(f"{where}: answers.reader.calibration needs seen and right curves ([[x...], [p...]]) for activity, object and time")
    for t in ("activity", "object", "time"):
        below = cal[t].get("not_seen_below")
        if below is not None and not (isinstance(below, (int, float)) and not isinstance(below, bool) and 0.0 <= below <= 1.0):
            raise BundleError(f"{where}: answers.reader.calibration.{t}.not_seen_below must be a number in 0..1, got {below!r}")
    if bad := [f"{t}: {p}" for t in ("activity", "object", "time") if (p := right_model_problem(cal[t].get("right_model"), t)
                                                                     or seen_model_problem(cal[t].get("seen_model"), t, C))]:
        raise BundleError(f"{where}: answers.reader.calibration.{bad[0]}")
    n_tok = m + _timeline_tokens(cfg, sec.get("timeline"), where)  # the answer step reads memory + timeline
    # None: a named (dynamic) axis
    expect = {("reader", "mem"): (None, m, d), ("reader", "ident"): (None, m, E),
              ("reader", "act_logits"): (None, m, C), ("reader", "event_logit"): (None, m),
              ("reader", "boxes"): (None, m, 4), ("reader", "span"): (None, m, 2),
              ("answer", "ident"): (n_tok, E), ("answer", "act_logits"): (n_tok, C), ("answer", "mem_t"): (n_tok,),
              ("answer", "q_object"): (
                  None, cfg.backbone.tokens_per_frame, d), ("answer", "activity_scores"): (None, C),
              ("answer", "intervals"): (None, K, 3), ("answer", "keyboxes"): (None, K, S, 4),
              ("answer", "evidence"): (None,)}
    for (g, n), shape in expect.items():
        meta = next(t for t in graphs[g].inputs + graphs[g].outputs if t.name == n)
        got = tuple(x if isinstance(x, int) else None for x in meta.shape)
        if len(got) != len(shape) or any(a is not None and b is not None and a != b for a, b in zip(got, shape)):
            raise _reader_mismatch(where, f"{g} '{n}' is {meta.describe()}, config embed {E}, ranked {K}, "
                                          f"keyframes {S}, {C} activities need "
                                          f"[{','.join('?' if x is None else str(x) for x in shape)}]")


# The timeline must hold the longest query window (the benchmark's "long" window, checkout/queries.py).
LONGEST_WINDOW_S = 1800.0


def timeline_tokens(horizon_s: float, fps: float, per_frame: int) -> int:
    """The timeline's constant size in tokens: horizon x fps x per_frame (frames rounded up)."""
    return int(math.ceil(float(horizon_s) * float(fps) - 1e-9)) * int(per_frame)


def _timeline_tokens(cfg: ModelConfig, tl: Any, where: str) -> int:
    """Tokens of the reader's timeline track (0 without one); BundleError when its section is not
    what its own formula and the model's frame rate make it, or too short for the longest window."""
    if tl is None:
        return 0
    if not isinstance(tl, dict) or not isinstance(tl.get("per_frame"), int) or tl["per_frame"] < 1 \
            or not isinstance(tl.get("horizon_s"), (int, float)) or not isinstance(tl.get("tokens"), int):
        raise BundleError(f"{where}: answers.reader.timeline needs integer per_frame >= 1, horizon_s and integer tokens")
    capacity = timeline_tokens(tl["horizon_s"], cfg.stream.fps, tl["per_frame"])
    if capacity != tl["tokens"]:
        raise BundleError(f"{where}: a bundle whose timeline does not match its config (tokens {tl['tokens']}, "
                          f"horizon {tl['horizon_s']:g} s x {cfg.stream.fps:g} fps x {tl['per_frame']} per frame "
                          f"= {capacity})")
    if tl["horizon_s"] < LONGEST_WINDOW_S:
        raise BundleError(f"{where}: a timeline of {tl['horizon_s']:g} s cannot hold the longest query window "
                          f"({LONGEST_WINDOW_S:g} s)")
    return capacity


def _event_head(cfg: ModelConfig, manifest: dict, path: Path, where: str) -> GraphInfo | None:
    """The event head's graph when the manifest lists one, checked against the contract, the config and
    the manifest's events section; None when it lists none."""
    g = manifest["graphs"].get("event_head")
    if g is None:
        return None
    if not isinstance(g, dict):
        raise BundleError(f"{where}: graph 'event_head' is not an object")
    inputs, outputs = _io("event_head", g.get("inputs"), where), _io("event_head", g.get("outputs"), where)
    _check_contract("event_head", inputs, outputs, where)
    sec = manifest.get("events")
    if not isinstance(sec, dict):
        raise BundleError(f"{where}: the bundle has an event_head graph but no 'events' section")
    for key in ("event_fps", "threshold"):
        if not isinstance(sec.get(key), (int, float)) or isinstance(sec.get(key), bool):
            raise BundleError(f"{where}: events.{key} is not a number")
    names = {k: sec.get(k) for k in ("classes", "zones", "light_states")}
    if bad := [k for k, v in names.items() if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v))]:
        raise BundleError(f"{where}: events.{bad[0]} is not a list of names")
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    K, Z, L = len(names["classes"]), len(names["zones"]), len(names["light_states"])
    expect = {"tokens": (None, P, d), "det_score": (None, P), "det_box": (None, P, 4), "det_class": (None, P, K),
              "det_held": (None, P), "light": (None, L), "zone": (None, P, Z)}
    if any(t.name == "det_embed" for t in outputs):
        ident = sec.get("identity")
        E = ident.get("dim") if isinstance(ident, dict) else None
        if not isinstance(E, int) or isinstance(E, bool) or E < 1:
            raise BundleError(f"{where}: the event head gives det_embed but events.identity.dim is not a whole number")
        expect.update(det_embed=(None, P, E), crop_embed=(None, E))
    for t in inputs + outputs:
        shape = expect[t.name]
        got = tuple(x if isinstance(x, int) else None for x in t.shape)
        if len(got) != len(shape) or any(a is not None and b is not None and a != b for a, b in zip(got, shape)):
            raise BundleError(f"{where}: a bundle whose event head does not match its config and events section "
                              f"(event_head '{t.name}' is {t.describe()}, needs "
                              f"[{','.join('?' if x is None else str(x) for x in shape)}])")
    return GraphInfo("event_head", path / str(g.get("onnx", "event_head.onnx")), str(g.get("sha256", "")), inputs,
                     outputs, None, g.get("quantization"))


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Read and check a bundle folder (files hashed unless ``verify`` is False)."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    if not mpath.is_file() and any(path.glob("*.onnx")):  # graphs without their manifest: a copy cut short
        raise BundleError(f"{path}: not a bundle: its graphs are there but {MANIFEST} is missing; copy it again")
    if not mpath.is_file():  # a training run's folder: the model lvm-train wrote (its reader beside it) is exported
        run = sorted((p.name for p in path.glob("*.safetensors") if not p.name.endswith("-reader.safetensors")
                      and p.stem not in ("checkpoint", "optimizer", "backbone", "ood")),
                     key=lambda n: not (path / n.replace(".safetensors", "-reader.safetensors")).is_file())[:1] \
            or sorted(p.name for p in path.glob("*.safetensors")
                      if not p.name.endswith("-reader.safetensors") and p.stem != "ood")[:1]
        raise BundleError(f"{path}: " + (f"a training run's folder (it holds {run[0]}), not a bundle: export it first "
                                         f"(lvm-export --checkpoint {path / run[0]} --out DIR)" if run else
                                         f"not a bundle (no {MANIFEST}; an export may have been interrupted -- run lvm-export)"))
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{mpath}: unreadable manifest ({' '.join(str(err).split())[:160]})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: manifest is not a JSON object")
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise BundleError(f"{mpath}: manifest format {fmt!r}, this runtime reads format {FORMAT}")
    raw_cfg = manifest.get("config")
    if isinstance(raw_cfg, dict):
        # training settings never reach the device: a bundle from a newer trainer (more train.* keys)
        # must still load here, so they are not validated
        raw_cfg = {k: v for k, v in raw_cfg.items() if k != "train"}
    try:
        cfg = model_config_from_dict(raw_cfg, f"{mpath} (config)")
    except ConfigError as err:
        raise BundleError(str(err)) from None
    graphs_m = manifest.get("graphs")
    if not isinstance(graphs_m, dict):
        raise BundleError(f"{mpath}: no 'graphs' section")
    graphs: dict[str, GraphInfo] = {}
    kind = _answers_kind(manifest, graphs_m, str(mpath))
    for name in GRAPH_NAMES + (READER_GRAPHS if kind == "reader" else ()):
        g = graphs_m.get(name)
        if not isinstance(g, dict):
            raise BundleError(f"{mpath}: graph '{name}' missing (has {', '.join(graphs_m) or 'none'})")
        inputs, outputs = _io(name, g.get("inputs"), str(mpath)), _io(name, g.get("outputs"), str(mpath))
        _check_contract(name, inputs, outputs, str(mpath))
        onnx = path / str(g.get("onnx", f"{name}.onnx"))
        graphs[name] = GraphInfo(name, onnx, str(g.get("sha256", "")), inputs, outputs,
                                 g.get("plan") if isinstance(g.get("plan"), dict) else None, g.get("quantization"))
    _check_shapes(cfg, graphs, str(mpath))
    if kind == "reader":
        _check_reader(cfg, manifest["answers"].get("reader"), graphs, str(mpath))
    event_head = _event_head(cfg, manifest, path, str(mpath))
    labels = manifest.get("labels") or {}
    acts = labels.get("activities") if isinstance(labels, dict) else None
    if not isinstance(acts, list) or len(acts) != cfg.heads.num_activities:
        n = len(acts) if isinstance(acts, list) else 0
        raise BundleError(f"{mpath}: labels.activities has {n} names, the model has {cfg.heads.num_activities} classes")
    bundle = Bundle(path, manifest, cfg, graphs, {k: list(v) for k, v in labels.items() if isinstance(v, list)},
                    event_head)
    if verify:
        verify_files(bundle)
    return bundle


def verify_files(bundle: Bundle, plans: bool = False) -> None:
    """The ONNX files (and plans, if asked) exist and hash to what the manifest says."""
    for g in [*bundle.graphs.values(), *([bundle.event_head] if bundle.event_head else [])]:
        files = [(g.onnx, g.sha256)]
        if plans and g.plan:
            files.append((g.plan_path, str(g.plan.get("sha256", ""))))
        for f, want in files:
            if not f.is_file():
                raise BundleError(f"{bundle.path}: {f.name} listed in the manifest is missing")
            if want and sha256_file(f) != want:
                raise BundleError(f"{bundle.path}: {f.name} does not match its sha256 in the manifest "
                                  f"(changed after export; re-export the bundle)")
