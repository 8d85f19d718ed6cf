"""lvm-export: a trained checkpoint -> a bundle of ONNX graphs (and TensorRT plans) with a manifest.

Steps: load the checkpoint -> export backbone / sampler / heads to ONNX (opset 18, onnxslim,
checker) -> FP32 parity against PyTorch -> FP16 or INT8 graphs -> parity of those -> CPU latency
(ONNX Runtime) -> TensorRT plans where TensorRT is present -> accuracy gate against the FP32 bundle
-> manifest, written last, and the folder moved into place atomically.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from export.cli_common import UsageError, run_cli

PRECISIONS = ("fp32", "fp16", "int8")
ENGINES = ("auto", "onnxruntime", "tensorrt")
PROG = "lvm-export"
EXIT_GATE = 3
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Export a trained LVM-Net checkpoint as a bundle: backbone, sampler and heads as ONNX graphs "
            "(opset 18) in FP32, FP16 (FP32 I/O) or INT8, TensorRT plans where TensorRT is installed, and a "
            "manifest.json with hashes, I/O signatures, parity against PyTorch, CPU latency and the accuracy "
            "gate's deltas. The bundle is written to a temp folder and moved into place only when complete."),
        epilog=(
            "examples:\n"
            "  lvm-export --precision fp32\n"
            "  lvm-export --precision fp16 --skip-gate\n"
            "  lvm-export --precision int8 --calib 'demo://checkout?seed=7000000&duration=600'\n"
            "  lvm-export --precision int8 --calib footage/kiosk.mp4 --gate-threshold 2\n"
            "\n"
            "INT8 is calibrated on real frames (the checkout generator by default, or any video file);\n"
            "a source that yields no frames is refused. For an ONNX Runtime target the form is chosen per\n"
            "graph by measured CPU latency: symmetric Q/DQ (loads in ORT and TensorRT), Q/DQ with uint8\n"
            "activations (backbone; ORT's x86 kernels) or dynamic quantisation (sampler, heads; ORT only);\n"
            "a graph no INT8 form makes 1.1x faster than FP32 stays FP32 (the manifest says why).\n"
            "TensorRT targets and --int8-portable use symmetric Q/DQ for every graph.\n"
            "exit status: 0 ok, 1 export failed (parity, TensorRT), 2 bad input, 3 accuracy gate failed."))
    p.add_argument("--precision", required=True, choices=PRECISIONS, metavar="{fp32,fp16,int8}",
                   help="numeric precision of the graphs")
    p.add_argument("--config", help="model config YAML or name (default: the checkpoint's own config; "
                                    "configs/models/lvm-tiny.yaml for the shipped checkpoint)")
    p.add_argument("--checkpoint", help="safetensors checkpoint (default: checkpoints/lvm-tiny.safetensors)")
    p.add_argument("--out", help="bundle folder (default: engines/<model>-<precision>/); an existing bundle "
                                 "there is replaced only after the new one is complete")
    p.add_argument("--calib", help="calibration / parity frames: demo://checkout?seed=N&duration=S or a video "
                                   "file (default: demo://checkout?seed=7000000&duration=600)")
    p.add_argument("--calib-frames", type=int, default=600,
                   help="frames read from --calib for INT8 calibration (default 600)")
    p.add_argument("--engine", choices=ENGINES, default="auto", metavar="{auto,onnxruntime,tensorrt}",
                   help="target: tensorrt builds plans (needs TensorRT); auto does so when TensorRT and a GPU "
                        "are present (default auto)")
    p.add_argument("--int8-portable", action="store_true",
                   help="INT8 only in the symmetric Q/DQ form TensorRT also loads, even for an ONNX Runtime target "
                        "(default for onnxruntime: the fastest measured form per graph, which may be ORT-only)")
    p.add_argument("--int8-graphs", default="backbone,sampler,heads", metavar="NAMES",
                   help="with --precision int8: comma list of the graphs that may be INT8; the others stay FP32 "
                        "(default all three, each kept FP32 anyway where INT8 is not measurably faster)")
    p.add_argument("--gate-threshold", type=float, default=1.0, metavar="POINTS",
                   help="largest allowed Recall@1x drop vs FP32 per query type and window, in points (default 1)")
    p.add_argument("--skip-gate", action="store_true", help="export without the accuracy gate (recorded in the manifest)")
    p.add_argument("--gate-videos", type=int, default=4, help="held-out videos for the gate (default 4)")
    p.add_argument("--gate-video-s", type=float, default=1800.0, help="seconds per gate video (default 1800)")
    p.add_argument("--gate-queries", type=int, default=120, help="queries per gate video (default 120)")
    p.add_argument("--bench-runs", type=int, default=20, help="timed runs per graph for CPU latency (default 20)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads for parity and latency (default 2)")
    p.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace memory pool limit (default 1024)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars: one line per finished step on stdout instead")
    return p


def main(argv: list[str] | None = None, *, evaluator=None) -> int:
    """``evaluator``: optional ``bundle_dir -> metrics`` for the accuracy gate (tests inject one)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(PROG, lambda: _run(args, evaluator))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _run(args, evaluator) -> int:
    from export.accuracy_gate import GateError
    from export.bundle_writer import BundleWriteError
    from export.calibration import CalibrationError
    from export.precision import PrecisionError
    from export.tensorrt_build import TensorRTBuildError

    try:
        return Exporter(args, evaluator).run()
    except (CalibrationError, BundleWriteError, GateError) as err:
        raise UsageError(_one_line(err)) from None
    except ExportFailed as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except (PrecisionError, TensorRTBuildError) as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:  # disk full, a folder removed underneath us: one line, no traceback
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED


class ExportFailed(RuntimeError):
    """The export ran but its result is not good enough to ship; one line."""


# ----------------------------------------------------------------------------------------------
# progress on stderr (rich when installed, plain lines otherwise)

class UI:
    """Progress for every step: rich bars on an interactive stderr, one plain line per finished step
    on stdout otherwise (logs stay readable; stderr then carries only warnings and errors)."""

    def __init__(self, enabled: bool) -> None:
        self.bars = enabled and sys.stderr.isatty()
        self.console = None
        if self.bars:
            try:
                from rich.console import Console

                self.console = Console(stderr=True, highlight=False)
            except ImportError:
                self.bars = False

    def log(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg, markup=False)
        else:
            print(f"{PROG}: {msg}", flush=True)

    def warn(self, msg: str) -> None:
        print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, desc: str, total: int | None = None):
        t0 = time.time()
        if self.console is not None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=self.console, transient=False) as prog:
                task = prog.add_task(desc, total=total)
                yield lambda n=1: prog.advance(task, n)
                if total is not None:
                    prog.update(task, completed=total)
        else:
            yield lambda n=1: None
            self.log(f"{desc}: done ({time.time() - t0:.1f} s)")


@contextlib.contextmanager
def _quiet():
    """The exporters and quantisers print chatter to stdout and the root logger; keep it out."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        root.setLevel(level)


# ----------------------------------------------------------------------------------------------

class Exporter:
    def __init__(self, args, evaluator=None) -> None:
        self.args = args
        self.evaluator = evaluator
        self.ui = UI(not args.no_progress)
        self.notes: list[str] = []

    # -- inputs ---------------------------------------------------------------------------------
    def _validate_args(self) -> None:
        a = self.args
        if a.calib_frames < 1:
            raise UsageError(f"--calib-frames must be >= 1, got {a.calib_frames}")
        if a.bench_runs < 1:
            raise UsageError(f"--bench-runs must be >= 1, got {a.bench_runs}")
        if a.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {a.threads}")
        if not (a.gate_threshold >= 0 and np.isfinite(a.gate_threshold)):
            raise UsageError(f"--gate-threshold must be a finite number of points >= 0, got {a.gate_threshold}")
        if a.gate_videos < 1 or a.gate_queries < 1 or a.gate_video_s <= 0:
            raise UsageError("--gate-videos, --gate-queries and --gate-video-s must be positive")
        names = [g.strip() for g in a.int8_graphs.split(",") if g.strip()]
        unknown = sorted(set(names) - set(GRAPH_NAMES))
        if unknown or not names:
            raise UsageError(f"--int8-graphs: unknown graph {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(GRAPH_NAMES)}")
        a.int8_graphs = set(names)
        if a.workspace_mb < 16:
            raise UsageError(f"--workspace-mb must be >= 16, got {a.workspace_mb}")

    def _load(self):
        from edge_runtime.config import resolve_model_config
        from export.checkpoint import DEFAULT_CHECKPOINT, REPO_ROOT, load_checkpoint
        from export.bundle_writer import sha256_file

        a = self.args
        ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
        if a.config:
            cfg = resolve_model_config(a.config)
        elif a.checkpoint:
            cfg = None  # the checkpoint's own config
        else:
            cfg = resolve_model_config(REPO_ROOT / "configs" / "models" / "lvm-tiny.yaml")
        with _quiet():
            net, meta = load_checkpoint(ckpt, cfg)
        cfg = cfg or net.cfg
        net.eval()
        try:
            shown = str(ckpt.resolve().relative_to(REPO_ROOT))
        except ValueError:
            shown = str(ckpt)
        info = {"path": shown, "sha256": sha256_file(ckpt), "format": meta.get("format"),
                "config_sha256": meta.get("config_sha256")}
        info.update({k: meta[k] for k in ("seed", "steps", "epoch", "command") if k in meta})
        return cfg, net, info

    def _engine(self) -> str:
        from export import tensorrt_build

        want = self.args.engine
        if want == "onnxruntime":
            return want
        have = tensorrt_build.available()
        if want == "tensorrt" and not have:
            raise UsageError("--engine tensorrt: TensorRT is not installed on this host (its wheels come from "
                             "NVIDIA's index; JetPack ships it); use --engine onnxruntime")
        if want == "tensorrt":
            return want
        if have:
            from edge_runtime.backends.tensorrt import device_info

            if device_info():
                return "tensorrt"
            self.notes.append("TensorRT is installed but no CUDA GPU was found: no plans built")
        return "onnxruntime"

    def _frames(self, cfg):
        from export.calibration import DEFAULT_CALIB_URI, CalibrationError, read_frames

        a = self.args
        uri = a.calib or DEFAULT_CALIB_URI
        n = a.calib_frames if a.precision == "int8" else min(a.calib_frames, 4 * cfg.stream.clip_frames)
        with self.ui.step(f"frames from {uri}", total=n) as tick:
            try:
                return read_frames(uri, cfg, max_frames=n, tick=tick)
            except CalibrationError as err:
                if a.calib or a.precision == "int8":
                    if a.precision == "int8":
                        raise CalibrationError(f"refusing INT8: {_one_line(err)}") from None
                    raise
                self.notes.append(f"parity on example inputs only ({_one_line(err)})")
                return None

    # -- the export -----------------------------------------------------------------------------
    def run(self) -> int:
        from export.bundle_writer import BundleWriter
        from export.checkpoint import REPO_ROOT

        a = self.args
        self._validate_args()
        t_start = time.time()
        if a.out:  # fail before the slow steps
            from export.bundle_writer import check_target

            check_target(Path(a.out))
        with self.ui.step("load checkpoint", total=1) as tick:
            cfg, net, ck = self._load()
            tick()
        self.cfg, self.net = cfg, net
        engine = self.engine = self._engine()
        target = Path(a.out) if a.out else REPO_ROOT / "engines" / f"{cfg.name}-{a.precision}"
        with BundleWriter(target) as writer, tempfile.TemporaryDirectory(prefix="lvm-export-") as work:
            self.writer = writer
            fp32_dir = Path(work) / "fp32"
            fp32_dir.mkdir()
            cal = self._frames(cfg)  # before the slow part: a source without frames fails fast
            sigs = self._export_onnx(fp32_dir, ck["sha256"])
            feeds = self._feeds(cal, fp32_dir)
            parity_feeds = self._parity_feeds(feeds)
            parity32 = self._parity("parity fp32 vs PyTorch", fp32_dir, parity_feeds)
            from export.parity import fp32_failures

            bad = fp32_failures(parity32)
            if bad:
                raise ExportFailed(f"the FP32 ONNX graphs do not match PyTorch: {'; '.join(bad)}")

            graphs_info = self._convert(fp32_dir, feeds, engine)
            parity = parity32 if a.precision == "fp32" else self._parity(
                f"parity {a.precision} vs PyTorch", writer.path, parity_feeds)
            latency = self._latency(fp32_dir, feeds)
            plans = self._plans(engine, sigs)

            graphs = self._graph_entries(sigs, graphs_info, plans)
            calibration = None
            source = None
            if cal is not None:
                source = {**cal.describe(), **(feeds.notes if feeds else {})}
                if a.precision == "int8":
                    calibration = {**source, "used_for": "int8 calibration (and parity inputs)"}
            parity_m = {**parity, "reference": "pytorch fp32",
                        "inputs": "example inputs" + (" + a stream of real frames through the FP32 graphs"
                                                      if feeds else ""), "frames": source}
            if a.precision != "fp32":
                parity_m["fp32_graphs"] = parity32
            export_meta = {"engine": engine, "notes": self.notes, "argv": getattr(a, "argv", []),
                           "threads": a.threads}

            def manifest(accuracy):
                from export.bundle_writer import build_manifest

                return build_manifest(cfg=cfg, precision=a.precision, checkpoint=ck, graphs=graphs, parity=parity_m,
                                      accuracy=accuracy, calibration=calibration, latency=latency, export=export_meta)

            accuracy, gate = self._gate(fp32_dir, sigs, manifest, ck, parity32)
            export_meta["seconds"] = round(time.time() - t_start, 1)
            if gate is not None and not gate.passed:
                self._summary(graphs, parity, latency, target, committed=False)
                print(f"{PROG}: error: {gate.message()}; bundle not written", file=sys.stderr)
                return EXIT_GATE
            writer.commit(manifest(accuracy))
        self._summary(graphs, parity, latency, target, committed=True)
        for n in self.notes:
            self.ui.log(f"note: {n}")
        return 0

    def _export_onnx(self, out_dir: Path, ck_sha: str) -> dict:
        import onnx

        from export.onnx_graphs import GRAPHS, check_contract, export_graph, io_signature, slim_and_check

        # Tracing is deterministic for (weights, config, exporter): a process that exports the same
        # checkpoint again (tests, notebooks: fp32 then fp16 then int8) reuses the graphs. Parity is
        # still checked on every export.
        key = (ck_sha, self.cfg.digest(), _tool_key())
        cached = _ONNX_CACHE.get(key)
        sigs = {}
        with self.ui.step("export ONNX (opset 18) + onnxslim + checker", total=len(GRAPHS)) as tick:
            for spec in GRAPHS:
                path = out_dir / f"{spec.name}.onnx"
                if cached:
                    path.write_bytes(cached[spec.name])
                    model = onnx.load(str(path))
                else:
                    with _quiet():
                        export_graph(self.net, spec, path)
                        model = slim_and_check(path)
                check_contract(model, spec)
                sigs[spec.name] = io_signature(model)
                tick()
        if not cached:
            _ONNX_CACHE.clear()
            _ONNX_CACHE[key] = {spec.name: (out_dir / f"{spec.name}.onnx").read_bytes() for spec in GRAPHS}
        return sigs

    def _feeds(self, cal, fp32_dir: Path):
        if cal is None:
            return None
        from export.calibration import build_feeds

        n_clips = len(cal) // self.cfg.stream.clip_frames
        with self.ui.step("stream frames through the FP32 graphs",
                          total=-(-len(cal) // self.cfg.stream.clip_frames) + n_clips) as tick:
            return build_feeds(cal, self.cfg, fp32_dir, threads=self.args.threads, tick=tick)

    def _parity_feeds(self, feeds) -> dict[str, list]:
        from export.onnx_graphs import GRAPHS
        from export.parity import example_feeds

        if getattr(self, "_pfeeds", None) is not None:
            return self._pfeeds
        out = {}
        limits = {"backbone": 4, "sampler": 8, "heads": 4}
        for spec in GRAPHS:
            lst = [example_feeds(self.net, spec)]
            if feeds is not None:
                real = getattr(feeds, spec.name)
                k = limits[spec.name]
                if len(real) > k:
                    real = [real[i] for i in np.linspace(0, len(real) - 1, k).round().astype(int)]
                lst += real
            out[spec.name] = lst
        self._pfeeds = out
        return out

    def _refs(self, name: str) -> list:
        """PyTorch outputs on the parity inputs, computed once per export."""
        from export.onnx_graphs import GRAPHS
        from export.parity import reference_outputs

        cache = self.__dict__.setdefault("_ref_cache", {})
        if name not in cache:
            spec = next(s for s in GRAPHS if s.name == name)
            cache[name] = reference_outputs(self.net, spec, self._pfeeds[name])
        return cache[name]

    def _parity(self, desc: str, graph_dir: Path, feeds: dict) -> dict:
        from export.onnx_graphs import GRAPHS
        from export.parity import graph_parity

        res = {}
        with self.ui.step(desc, total=len(GRAPHS)) as tick:
            for spec in GRAPHS:
                res[spec.name] = graph_parity(self.net, spec, graph_dir / f"{spec.name}.onnx", feeds[spec.name],
                                              threads=self.args.threads, refs=self._refs(spec.name))
                tick()
        return res

    def _convert(self, fp32_dir: Path, feeds, engine: str) -> dict:
        """Write the bundle's graphs at the chosen precision; -> per-graph precision info."""
        a = self.args
        out = self.writer.path
        info: dict[str, dict] = {}
        names = ("backbone", "sampler", "heads")
        if a.precision == "fp32":
            for n in names:
                shutil.copyfile(fp32_dir / f"{n}.onnx", out / f"{n}.onnx")
                info[n] = {"precision": "fp32", "quantization": None}
            return info
        if a.precision == "fp16":
            import onnx

            from export.precision import convert_fp16

            with self.ui.step("FP16 (casts in the graph, FP32 I/O)", total=len(names)) as tick:
                for n in names:
                    model, pol = convert_fp16(onnx.load(str(fp32_dir / f"{n}.onnx")))
                    onnx.save(model, str(out / f"{n}.onnx"))
                    info[n] = {"precision": "fp16", "quantization": None, "fp16": pol}
                    tick()
            return info
        return self._int8(fp32_dir, feeds, engine)

    def _int8(self, fp32_dir: Path, feeds, engine: str) -> dict:
        """Per graph: build the INT8 candidates the target can run, time them against each other
        (interleaved, ORT CPU), keep the fastest (within 5%: the one closer to FP32)."""
        import onnx

        from export.onnx_graphs import GRAPHS
        from export.parity import graph_parity
        from export.precision import (STATIC_OPS_CONV, STATIC_OPS_TRANSFORMER, activation_matmuls, measure_latency,
                                      prepare, quantize_int8_dynamic, quantize_int8_static, selection_path)

        a = self.args
        out = self.writer.path
        cand_dir = Path(tempfile.mkdtemp(prefix="int8-", dir=fp32_dir.parent))
        info: dict[str, dict] = {}
        parity_feeds = self._parity_feeds(feeds)
        portable = engine == "tensorrt" or a.int8_portable
        with self.ui.step("INT8: quantise, time candidates, choose", total=len(GRAPHS)) as tick:
            for spec in GRAPHS:
                n = spec.name
                src = fp32_dir / f"{n}.onnx"
                if n not in a.int8_graphs:
                    shutil.copyfile(src, out / f"{n}.onnx")
                    info[n] = {"precision": "fp32", "quantization": {"mode": "none", "reason": "kept FP32: not in --int8-graphs"}}
                    tick()
                    continue
                calib = _spread(getattr(feeds, n), CALIB_BATCHES[n])
                prepared = prepare(onnx.load(str(src)))
                exclude = selection_path(prepared)
                qsrc = cand_dir / f"{n}.prepared.onnx"  # node names the exclusions refer to
                onnx.save(prepared, str(qsrc))
                conv = n == "backbone"
                static_exclude = exclude if conv else exclude | activation_matmuls(prepared)
                ops = STATIC_OPS_CONV if conv else STATIC_OPS_TRANSFORMER
                makers = {"static_qdq": lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                     exclude=static_exclude)}
                if not portable and conv:  # ORT's x86 kernels want uint8 activations (U8S8)
                    makers["static_qdq_u8"] = lambda p: quantize_int8_static(qsrc, p, calib, op_types=ops,
                                                                              exclude=exclude, symmetric=False)
                if not portable and not conv:  # transformer projections: weights int8, activations per call
                    makers["dynamic"] = lambda p: quantize_int8_dynamic(qsrc, p, exclude=exclude)
                cands: dict[str, tuple[Path, dict]] = {}
                for kind, make in makers.items():
                    p = cand_dir / f"{n}.{kind}.onnx"
                    with _quiet():
                        cands[kind] = (p, make(p))
                errs = {k: self._err(graph_parity(self.net, spec, v[0], parity_feeds[n], a.threads,
                                                  refs=self._refs(n)))
                        for k, v in cands.items()}
                if len(cands) == 1:
                    choice = "static_qdq"
                    reason = ("TensorRT target" if engine == "tensorrt" else "--int8-portable") + \
                        ": symmetric Q/DQ, the form both TensorRT and ONNX Runtime load"
                    lat = {}
                else:
                    feed = calib[-1]
                    lat = measure_latency({"fp32": src, **{k: v[0] for k, v in cands.items()}}, feed,
                                          runs=a.bench_runs, warmup=_warmup(a.bench_runs), threads=a.threads)
                    choice, reason = _choose(lat, errs)
                path, q = (src, {"mode": "none"}) if choice == "fp32" else cands[choice]
                q = dict(q)
                q["reason"] = reason
                q["candidates"] = {k: {"latency": lat.get(k), "error": errs.get(k)} for k in ["fp32"] * bool(lat) + list(cands)}
                q["error_vs"] = "pytorch fp32 on the parity inputs"
                if lat:
                    q["timed_with"] = _feed_shapes(calib[-1])
                shutil.copyfile(path, out / f"{n}.onnx")
                info[n] = {"precision": "fp32" if choice == "fp32" else "int8", "quantization": q}
                tick()
        shutil.rmtree(cand_dir, ignore_errors=True)
        return info

    @staticmethod
    def _err(par: dict) -> dict:
        if "topm_recall" in par:
            return {"topm_recall": par["topm_recall"], "kept_feature_max_abs": par["kept_feature_max_abs"]}
        return {"max_abs": par["max_abs"],
                "mean_abs": float(np.mean([o["mean_abs"] for o in par["outputs"].values()]))}

    def _latency(self, fp32_dir: Path, feeds) -> dict:
        """CPU latency (ONNX Runtime) of the bundle's graphs, interleaved with the FP32 graphs."""
        from export.onnx_graphs import GRAPHS
        from export.parity import example_feeds
        from export.precision import measure_latency

        a = self.args
        T = self.cfg.stream.clip_frames
        res = {}
        with self.ui.step(f"CPU latency (ORT, {a.threads} threads, {a.bench_runs} runs)", total=len(GRAPHS)) as tick:
            for spec in GRAPHS:
                n = spec.name
                if feeds is not None and getattr(feeds, n):
                    # the same call at every precision (the 4th clip, the 2nd head batch), however many
                    # frames were read: latencies of fp32 / fp16 / int8 bundles compare
                    lst = getattr(feeds, n)
                    feed = lst[min({"backbone": 0, "sampler": 3, "heads": 1}[n], len(lst) - 1)]
                elif n == "backbone":
                    feed = example_feeds(self.net, spec, batch=T)
                else:
                    feed = example_feeds(self.net, spec, queries=16, window=self.cfg.heads.window_queries)
                paths = {a.precision: self.writer.path / f"{n}.onnx"}
                if a.precision != "fp32":
                    paths["fp32"] = fp32_dir / f"{n}.onnx"
                lat = measure_latency(paths, feed, runs=a.bench_runs, warmup=_warmup(a.bench_runs), threads=a.threads)
                entry = {**lat[a.precision], "inputs": _feed_shapes(feed)}
                if "fp32" in lat and a.precision != "fp32":
                    entry["fp32_median_ms"] = lat["fp32"]["median_ms"]
                    entry["speedup_vs_fp32"] = round(lat["fp32"]["median_ms"] / max(lat[a.precision]["median_ms"], 1e-9), 3)
                res[n] = entry
                tick()
        return res

    def _plans(self, engine: str, sigs: dict) -> dict:
        if engine != "tensorrt":
            return {}
        from export.tensorrt_build import TIMING_CACHE, Profile, build_plan

        a = self.args
        cache = self.writer.path / TIMING_CACHE
        old = self.writer.target / TIMING_CACHE
        if old.is_file():
            shutil.copyfile(old, cache)  # reuse the previous bundle's tactics (validated by TensorRT)
        profile = Profile.for_config(self.cfg)
        plans = {}
        with self.ui.step("TensorRT plans", total=3) as tick:
            for n in ("backbone", "sampler", "heads"):
                plans[n] = build_plan(self.writer.path / f"{n}.onnx", self.writer.path / f"{n}.plan", sigs[n],
                                      precision=a.precision, profile=profile, timing_cache=cache,
                                      workspace_bytes=a.workspace_mb << 20, log=self.ui.log)
                tick()
        return plans

    def _graph_entries(self, sigs: dict, info: dict, plans: dict) -> dict:
        import onnx

        from export.bundle_writer import graph_entry
        from export.onnx_graphs import io_signature

        out = {}
        for n in ("backbone", "sampler", "heads"):
            # the I/O as written (FP16 / INT8 graphs keep FP32 I/O; read it back to be sure)
            sig = io_signature(onnx.load(str(self.writer.path / f"{n}.onnx"), load_external_data=False))
            if [t["name"] for t in sig["inputs"]] != [t["name"] for t in sigs[n]["inputs"]]:
                raise ExportFailed(f"{n}: converted graph changed its inputs")
            out[n] = graph_entry(self.writer.path, n, f"{n}.onnx", sig, quantization=info[n].get("quantization"),
                                 plan=plans.get(n), precision=info[n]["precision"], fp16=info[n].get("fp16"))
        return out

    def _gate(self, fp32_dir: Path, sigs: dict, manifest, ck: dict, parity32: dict):
        """-> (manifest accuracy section, GateResult or None)."""
        a = self.args
        if a.precision == "fp32":
            return {"reference": "fp32", "gate": "not applicable (this is the reference)"}, None
        if a.skip_gate:
            self.ui.warn(f"--skip-gate: this {a.precision} bundle was not checked against FP32 accuracy")
            return {"reference": "fp32", "gate": "skipped (--skip-gate)", "threshold_points": a.gate_threshold}, None
        from export.accuracy_gate import engine_evaluator, run_gate
        from export.bundle_writer import build_manifest, graph_entry, write_json_atomic

        # the FP32 reference bundle: same graphs as the fp32 export, with its own manifest
        ref_graphs = {n: graph_entry(fp32_dir, n, f"{n}.onnx", sigs[n], precision="fp32") for n in sigs}
        write_json_atomic(fp32_dir / "manifest.json", build_manifest(
            cfg=self.cfg, precision="fp32", checkpoint=ck, graphs=ref_graphs, parity=parity32, accuracy=None,
            calibration=None))
        self.writer.write_manifest(manifest({"gate": "running"}))  # the candidate must load as a bundle
        evaluator = self.evaluator or engine_evaluator(
            videos=a.gate_videos, video_s=a.gate_video_s, queries=a.gate_queries, threads=a.threads,
            backend="auto" if self.engine == "tensorrt" else "onnxruntime", progress=self.ui.bars)
        with self.ui.step(f"accuracy gate ({a.precision} vs fp32, threshold {a.gate_threshold:g} points R@1x)"):
            res = run_gate(fp32_dir, self.writer.path, evaluator, a.gate_threshold)
        (self.writer.path / "manifest.json").unlink()  # rewritten, complete, at commit
        self.ui.log(res.message())
        return res.manifest(), res

    # -- summary --------------------------------------------------------------------------------
    def _summary(self, graphs: dict, parity: dict, latency: dict, target: Path, committed: bool) -> None:
        rows = []
        for n, g in graphs.items():
            p = parity.get(n, {})
            par = (f"recall {p['topm_recall']:.4f}" if "topm_recall" in p else f"max|d| {p.get('max_abs', 0):.2e}")
            lat = latency.get(n, {})
            lat_s = f"{lat.get('median_ms', 0):.1f} ({lat.get('p10_ms', 0):.0f}-{lat.get('p90_ms', 0):.0f})"
            if "speedup_vs_fp32" in lat:
                lat_s += f" x{lat['speedup_vs_fp32']:.2f} vs fp32"
            q = g.get("quantization") or {}
            rows.append((n, g.get("precision") or "", f"{g['size_bytes'] / 1e6:.2f}", par, lat_s,
                         q.get("mode", "-") if q else "-", "yes" if g.get("plan") else "-"))
        head = ("graph", "precision", "size MB", "parity vs PyTorch", "CPU ms median (p10-p90)", "int8 mode", "plan")
        where = f"bundle {'written to' if committed else 'NOT written'}: {target}"
        try:
            from rich.console import Console
            from rich.table import Table

            t = Table(title=f"lvm-export {self.cfg.name} {self.args.precision}", caption=where)
            for h in head:
                t.add_column(h, justify="right" if h in ("size MB",) else "left")
            for r in rows:
                t.add_row(*r)
            con = Console(highlight=False)
            if not con.is_terminal:
                con = Console(highlight=False, width=132)
            con.print(t)
        except ImportError:
            print(" | ".join(head))
            for r in rows:
                print(" | ".join(r))
            print(where)


_ONNX_CACHE: dict[tuple, dict[str, bytes]] = {}


def _tool_key() -> tuple:
    import onnxslim
    import torch

    return (torch.__version__, onnxslim.__version__)


GRAPH_NAMES = ("backbone", "sampler", "heads")  # export.onnx_graphs.GRAPHS, without importing torch
MIN_INT8_SPEEDUP = 1.1  # below this an INT8 graph only costs accuracy: keep FP32
# calibration batches per graph (spread over the whole source): MinMax calibration keeps every
# intermediate tensor of every batch, so the heads' (Q x (m + P + ...)) activations are kept few.
CALIB_BATCHES = {"backbone": 16, "sampler": 16, "heads": 8}


def _spread(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def _warmup(runs: int) -> int:
    return 3 if runs >= 10 else 1


def _feed_shapes(feed: dict) -> dict:
    return {k: list(v.shape) for k, v in feed.items()}


def _choose(lat: dict, errs: dict) -> tuple[str, str]:
    """Faster INT8 candidate by median latency; within 5% the more accurate one. A graph whose best
    INT8 form is not MIN_INT8_SPEEDUP x faster than FP32 stays FP32: there INT8 would only cost accuracy
    (on x86 the sampler's and heads' small MatMuls barely speed up, and a moved sampler score changes
    which tokens the memory keeps)."""
    names = [k for k in errs]
    names.sort(key=lambda k: lat[k]["median_ms"])
    fast, slow = names[0], names[-1]

    def badness(e: dict) -> float:
        return (1.0 - e["topm_recall"]) if "topm_recall" in e else e["mean_abs"]

    mf, ms, m32 = lat[fast]["median_ms"], lat[slow]["median_ms"], lat["fp32"]["median_ms"]
    runs = lat[fast]["runs"]
    if m32 < MIN_INT8_SPEEDUP * mf:
        return "fp32", (f"kept FP32: the fastest INT8 form ({fast} {mf:.1f} ms) is not {MIN_INT8_SPEEDUP:g}x faster "
                        f"than fp32 {m32:.1f} ms on this CPU (median of {runs} interleaved runs)")
    if len(names) > 1 and ms <= 1.05 * mf and badness(errs[slow]) < badness(errs[fast]):
        return slow, (f"{slow} within 5% of {fast} ({ms:.1f} vs {mf:.1f} ms, median of {runs} interleaved runs) "
                      f"and closer to FP32")
    others = ", ".join(f"{k} {lat[k]['median_ms']:.1f} ms" for k in names[1:])
    return fast, (f"fastest on this CPU: {fast} {mf:.1f} ms vs {others}; fp32 {m32:.1f} ms "
                  f"(median of {runs} interleaved runs)")

if __name__ == "__main__":
    sys.exit(main())
