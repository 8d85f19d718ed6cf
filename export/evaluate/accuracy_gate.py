"""Accuracy gate: a reduced-precision bundle must answer like the FP32 bundle.

Both bundles answer the same held-out generator videos (or a dataset's test split) and queries
through the device runtime; the gate compares Recall@1x per query type x window length (in points,
x100) and fails when any cell drops by more than the threshold. Recall@3x deltas are recorded too but do not gate.

The comparison is paired: the same queries, answered by both. What moves a cell is the answers that
changed, so every cell reports its queries, how many the candidate answered better and worse, and on
how many subjects (a video's instance or activity: its queries share one answer, and change together).
One changed query moves a cell by up to 100 / n points (``resolution`` in the manifest), and the
queries on one subject move together, so the gate needs many subjects, not only many queries: by
default 16 videos of 30 minutes with 300 queries each (~560 queries per cell, one moves it <= 0.18
points). On 4 videos x 1,200 queries an FP16 backbone moved an activity cell 1.4 points (3 instances).

The evaluator is injected: ``evaluator(bundle_dir) -> metrics`` with metrics shaped like
``export.evaluate.scoring.evaluate_engine``'s result. ``engine_evaluator`` builds the real one, importing
the runtime and the evaluation lazily, and renders or decodes the videos once for both bundles.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.query.types import NAMES  # the query types, each gated on every window

WINDOWS = ("short", "medium", "long")
GATED = "recall@1x"
RECORDED = ("recall@1x", "recall@3x")
# Held-out videos for the gate: disjoint from training (< 1_000_000), lvm-eval's default seeds
# (1_000_000 + seed * 1000 + i) and calibration (7_000_000).
GATE_SEED_BASE = 8_000_000
# the gate's default sample: GATE_VIDEOS held-out videos, GATE_QUERIES queries each (see the module doc)
GATE_VIDEOS = 16
GATE_QUERIES = 300

Evaluator = Callable[[Path], dict]


class GateError(RuntimeError):
    """The gate could not run (missing runtime, no videos); the message is one line."""


@dataclass
class GateResult:
    passed: bool
    threshold_points: float
    deltas: dict
    reference: dict
    candidate: dict
    failures: list[str] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    paired: dict | None = None  # per cell: queries, better, worse, subjects, subjects_changed

    def manifest(self) -> dict:
        return {"reference": "fp32", "metric": GATED, "threshold_points": self.threshold_points,
                "passed": self.passed, "failures": self.failures, "deltas": self.deltas[GATED],
                "deltas_all": self.deltas, "fp32": _table(self.reference), "candidate": _table(self.candidate),
                "paired": self.paired, "resolution": self.resolution(), "evaluation": self.evaluation}

    def resolution(self) -> dict | None:
        """Per cell, the points one changed query moves it by at most (100 / its queries)."""
        if self.paired is None:
            return None
        return {qt: {w: (round(100.0 / c["queries"], 3) if c["queries"] else None) for w, c in ws.items()}
                for qt, ws in self.paired.items()}

    def lines(self) -> list[str]:
        """The gate's table, one line per cell: FP32 and candidate Recall@1x, the delta, and (paired)
        the cell's queries and how many the candidate answered better / worse."""
        out = [f"{'cell':16s} {'fp32':>6s} {'cand':>6s} {'delta':>7s}" +
               ("  queries  better  worse  (subjects changed / in cell)" if self.paired else "")]
        for qt in NAMES:
            for w in WINDOWS:
                r, c, d = _cell(self.reference, GATED, qt, w), _cell(self.candidate, GATED, qt, w), self.deltas[GATED][qt][w]
                if d is None:
                    continue
                line = f"{qt + '/' + w:16s} {100 * r:6.1f} {100 * c:6.1f} {d:+7.2f}"
                p = (self.paired or {}).get(qt, {}).get(w)
                if p:
                    line += (f"  {p['queries']:7d}  {p['better']:6d}  {p['worse']:5d}  "
                             f"({p['subjects_changed']} / {p['subjects']})")
                out.append(line)
        return out

    def message(self) -> str:
        if self.passed:
            changed = ""
            if self.paired:
                cells = [c for ws in self.paired.values() for c in ws.values()]
                changed = (f"; {sum(c['better'] + c['worse'] for c in cells)} of {sum(c['queries'] for c in cells)} "
                           f"answers changed: {sum(c['better'] for c in cells)} better, "
                           f"{sum(c['worse'] for c in cells)} worse")
            return f"accuracy gate passed (no {GATED} drop above {self.threshold_points:g} point{'' if self.threshold_points == 1 else 's'} vs fp32{changed})"
        return (f"accuracy gate failed: {'; '.join(self.failures)} "
                f"(threshold {self.threshold_points:g} point{'' if self.threshold_points == 1 else 's'} {GATED} vs fp32)")


def _cell(metrics: dict, metric: str, qt: str, w: str):
    try:
        v = metrics[metric][qt][w]
    except (KeyError, TypeError):
        return None
    return None if v is None else float(v)


def _table(metrics: dict) -> dict:
    return {m: {qt: {w: _cell(metrics, m, qt, w) for w in WINDOWS} for qt in NAMES} for m in RECORDED}


def paired_counts(reference: dict, candidate: dict) -> dict | None:
    """Per cell, the queries both bundles answered (their ``per_query`` records, matched by id): how
    many, how many the candidate answered better / worse (its Recall@1x above / below the reference's),
    how many subjects the cell asks about and on how many an answer changed. None without records."""
    a, b = reference.get("per_query"), candidate.get("per_query")
    if not a or not b:
        return None
    by_id = {r["qid"]: r for r in b}
    if len(by_id) != len(b) or set(by_id) != {r["qid"] for r in a}:
        raise GateError("the two bundles were not asked the same queries; the paired comparison needs them")
    cells = {qt: {w: {"queries": 0, "better": 0, "worse": 0, "subjects": set(), "subjects_changed": set()}
                  for w in WINDOWS} for qt in NAMES}
    for r in a:
        c = by_id[r["qid"]]
        cell = cells.get(r["type"], {}).get(r["window"])
        if cell is None or r[GATED] is None or c[GATED] is None:
            continue
        cell["queries"] += 1
        cell["subjects"].add(r.get("subject"))
        if c[GATED] != r[GATED]:
            cell["better" if c[GATED] > r[GATED] else "worse"] += 1
            cell["subjects_changed"].add(r.get("subject"))
    return {qt: {w: {**c, "subjects": len(c["subjects"]), "subjects_changed": len(c["subjects_changed"])}
                 for w, c in ws.items()} for qt, ws in cells.items()}


def compare(reference: dict, candidate: dict, threshold_points: float) -> GateResult:
    """Deltas candidate - reference in points; the gate fails on any R@1x drop > threshold."""
    paired = paired_counts(reference, candidate)
    deltas: dict = {}
    failures: list[str] = []
    cells = 0
    for m in RECORDED:
        deltas[m] = {}
        for qt in NAMES:
            deltas[m][qt] = {}
            for w in WINDOWS:
                r, c = _cell(reference, m, qt, w), _cell(candidate, m, qt, w)
                if r is None or c is None:
                    deltas[m][qt][w] = None
                    continue
                d = round(100.0 * (c - r), 2)
                deltas[m][qt][w] = d
                if m == GATED:
                    cells += 1
                    if -d > threshold_points:
                        p = paired[qt][w] if paired else None
                        flips = (f"; {p['queries']} queries: {p['better']} better, {p['worse']} worse, "
                                 f"on {p['subjects_changed']} of {p['subjects']} subjects") if p else ""
                        failures.append(f"{qt}/{w} {100 * r:.1f} -> {100 * c:.1f} ({d:+.1f}{flips})")
    if cells == 0:
        raise GateError("the evaluation returned no Recall@1x cells to compare (no queries?)")
    return GateResult(not failures, float(threshold_points), deltas, reference, candidate, failures, paired=paired)


def run_gate(reference_bundle: Path, candidate_bundle: Path, evaluator: Evaluator, threshold_points: float,
             log: Callable[[str], None] | None = None, reference: dict | None = None) -> GateResult:
    """``reference``: the FP32 bundle's metrics from an earlier run (``GateResult.reference``): the
    same bundle answers the same, so a second candidate is not measured against it again."""
    ref = reference
    if ref is None:
        if log:
            log("accuracy gate: evaluating the fp32 reference bundle")
        ref = evaluator(Path(reference_bundle))
    if log:
        log("accuracy gate: evaluating the candidate bundle")
    cand = evaluator(Path(candidate_bundle))
    res = compare(ref, cand, threshold_points)
    res.evaluation = {k: ref[k] for k in ("queries", "memory_tokens") if k in ref}
    if res.paired:
        res.evaluation["changed_answers"] = sum(c["better"] + c["worse"] for ws in res.paired.values()
                                                for c in ws.values())
    info = getattr(evaluator, "info", None)
    if isinstance(info, dict):
        res.evaluation.update(info)
    return res


def engine_evaluator(*, videos: int = GATE_VIDEOS, video_s: float = 1800.0, queries: int = GATE_QUERIES, seed: int = 0,
                     backend: str = "onnxruntime", threads: int | None = None, data=None,
                     progress: bool = True) -> Evaluator:
    """The real evaluator: held-out generator videos in the looks training never saw -- or, with
    ``data`` (an ``export.dataset.eval_data.DataSplit``), every video of that dataset split with queries
    from its annotations -- answered by ``edge_runtime.engine.engine.Engine`` and scored by
    ``export.evaluate.scoring.evaluate_engine``. Videos are decoded or rendered on first use and reused for
    every bundle. ``backend="auto"`` runs a bundle's TensorRT plans where they load (the FP32
    reference has none and runs in ONNX Runtime)."""
    cache: dict = {}

    def evaluate(bundle_dir: Path) -> dict:
        try:
            from edge_runtime.engine.engine import Engine
            from export.evaluate.scoring import evaluate_engine
        except ImportError as err:
            raise GateError(f"the accuracy gate needs the runtime engine and the evaluation ({err}); "
                            "use --skip-gate to export without it") from None
        if "videos" not in cache:
            from edge_runtime.backends.bundle import load_bundle

            cfg = load_bundle(bundle_dir, verify=False).cfg
            if data is None:
                cache["videos"], evaluate.info = _generator_videos(cfg, videos, video_s, queries, seed, progress)
            else:
                from export.dataset import DatasetError
                from export.evaluate.scoring import dataset_video

                try:
                    cache["videos"] = [dataset_video(item, cfg, queries, seed, i, progress=progress)
                                       for i, item in enumerate(data.items)]
                except DatasetError as err:  # a test video that does not decode
                    raise GateError(f"accuracy gate on {data.root} ({data.split} split): {err}") from None
                evaluate.info = {"data": data.describe(), "queries_per_video": queries, "seed": seed}
            evaluate.info["backend"] = backend
        return evaluate_engine(lambda: Engine(bundle_dir, backend=backend, threads=threads), cache["videos"],
                               progress=progress, per_query=True)

    evaluate.info = {}
    return evaluate


def _generator_videos(cfg, videos: int, video_s: float, queries: int, seed: int, progress: bool):
    """-> (videos with frames and queries, what the manifest records about them)."""
    from edge_runtime.checkout import EVAL_LOOKS
    from export.dataset.video_data import attach_queries, render_video

    vids, looks, seeds = [], [], []
    for i in range(videos):
        look = EVAL_LOOKS[i % len(EVAL_LOOKS)]
        s = GATE_SEED_BASE + seed * 1000 + i
        v = render_video(s, video_s, cfg.backbone.image_size, cfg.stream.fps, look=look, progress=progress)
        vids.append(attach_queries(v, queries, s))
        looks.append(look)
        seeds.append(s)
    return vids, {"videos": videos, "video_s": video_s, "queries_per_video": queries, "seeds": seeds, "looks": looks}
