"""One lvm-export run, step by step.

Load the checkpoint (and its memory reader, when there is one) -> export backbone / sampler / heads
(+ reader / answer) to ONNX (opset 18, onnxslim, checker) -> FP32 parity against PyTorch -> FP16 or
INT8 graphs -> parity of those -> CPU latency (ONNX Runtime) -> TensorRT plans where TensorRT is
present -> accuracy gate against the FP32 bundle (when it fails: the first reduced graph back to FP32,
and the steps from OOD statistics on again) -> manifest, written last, and the folder moved into place
atomically. Every step is one method; the heavy libraries are imported inside them, so the command
line answers --help and bad input fast.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from edge_runtime.backends.bundle import EVENT_GRAPHS, GRAPH_NAMES, READER_GRAPHS
from export.onnx.inputs import check_data_labels, choose_engine, load_model, open_data, read_calibration, validate_args
from export.onnx.summary import print_summary
from export.onnx.ui import UI, quiet


class ExportFailed(RuntimeError):
    """The export ran but its result is not good enough to ship; one line."""


class GateFailed(RuntimeError):
    """The reduced-precision bundle answers worse than FP32 beyond the threshold; one line. Nothing was written."""


# Tracing is deterministic for (weights, config, exporter): a process that exports the same
# checkpoint again (tests, notebooks: fp32 then fp16 then int8) reuses the graphs. Parity is
# still checked on every export. The last few variants are kept (with and without the reader or the
# event head: tens of MB of graph bytes).
_ONNX_CACHE: dict[tuple, dict[str, bytes]] = {}
_ONNX_CACHE_KEEP = 3


def _tool_key() -> tuple:
    import onnxslim
    import torch

    return (torch.__version__, onnxslim.__version__)


class Exporter:
    """``Exporter(args, evaluator).run()``: 0 when the bundle was written; raises otherwise.
    ``evaluator``: optional ``bundle_dir -> metrics`` for the accuracy gate (tests inject one)."""

    def __init__(self, args, evaluator=None) -> None:
        self.args = args
        self.evaluator = evaluator
        self.ui = UI(not args.no_progress)
        self.notes: list[str] = []

    def run(self) -> int:
        from export.onnx.bundle_writer import BundleWriter, build_manifest
        from export.model.checkpoint import REPO_ROOT

        a = self.args
        validate_args(a)
        t_start = time.time()
        if a.out:  # fail before the slow steps
            from export.onnx.bundle_writer import check_target

            check_target(Path(a.out))
        self.data = open_data(a, self.notes)
        with self.ui.step("load checkpoint", total=1) as tick:
            cfg, net, ck = load_model(a)
            tick()
        check_data_labels(self.data, ck)
        self.cfg, self.net = cfg, net
        self.reader = self._open_reader(cfg)
        self.events = self._open_events(cfg, ck)
        if self.events is not None and self.reader is not None:
            self.events.reader = self.reader  # the reader's identity joins the event head's graph
        from export.onnx.event_graphs import event_spec, events_section
        from export.onnx.graphs import graph_specs
        from export.onnx.reader_graphs import READER_SPECS, answers_section

        self.specs = graph_specs(net) + (READER_SPECS if self.reader else ()) + ((event_spec(self.events),) if self.events else ())
        self.names = GRAPH_NAMES + (READER_GRAPHS if self.reader else ()) + (EVENT_GRAPHS if self.events else ())
        answers = answers_section(self.reader)
        events = events_section(self.events) if self.events else None
        engine = self.engine = choose_engine(a.engine, self.notes)
        target = Path(a.out) if a.out else REPO_ROOT / "engines" / f"{cfg.name}-{a.precision}"
        from export.onnx.track_labels_file import check_track_labels, copy_track_labels

        labeler = (check_track_labels(self.events_checkpoint, events["event_fps"], self.notes, self.events.sha256)
                   if events else None)
        with BundleWriter(target) as writer, tempfile.TemporaryDirectory(prefix="lvm-export-") as work:
            self.writer = writer
            if labeler is not None:
                events["track_labels"] = copy_track_labels(writer.path, labeler)
            fp32_dir = Path(work) / "fp32"
            fp32_dir.mkdir()
            # before the slow part: a source without frames fails fast
            cal = read_calibration(a, cfg, self.ui, self.notes, train=self.data.get("train"))
            sigs = self._export_onnx(fp32_dir, ck["sha256"])
            feeds = self._feeds(cal, fp32_dir)
            from export.onnx.parity import fp32_failures
            from export.onnx.parity_check import ParityCheck

            self.check = ParityCheck(net, feeds, a.threads, reader=self.reader, events=self.events)
            parity32 = self._parity("parity fp32 vs PyTorch", fp32_dir, self.check)
            bad = fp32_failures(parity32)
            if bad:
                raise ExportFailed(f"the FP32 ONNX graphs do not match PyTorch: {'; '.join(bad)}")

            graphs_info = self._convert(fp32_dir, feeds, engine)
            calibration = None
            source = None
            if cal is not None:
                source = {**cal.describe(), **(feeds.notes if feeds else {})}
                if a.precision == "int8":
                    calibration = {**source, "used_for": "int8 calibration (and parity inputs)"}
            export_meta = {"engine": engine, "notes": self.notes, "argv": getattr(a, "argv", []),
                           "threads": a.threads, "reader": self.reader.shown if self.reader else None}
            from export.evaluate.ood_stats import ood_step, write_bundle_ood

            train = self.data.get("train")  # --data: fitted on the dataset's train split, not the generator
            fallbacks: list[dict] = []
            reference = None  # the FP32 bundle's gate metrics, evaluated once
            while True:
                with self.ui.step(*ood_step(train)) as tick:
                    ood = write_bundle_ood(writer.path, cfg, threads=a.threads, seed=cfg.train.seed, train=train,
                                           notes=self.notes, tick=tick)
                parity = parity32 if a.precision == "fp32" else self._parity(
                    f"parity {a.precision} vs PyTorch", writer.path, self.check)
                latency = self._latency(fp32_dir, feeds)
                plans = self._plans(engine, sigs)
                graphs = self._graph_entries(sigs, graphs_info, plans)
                parity_m = {**parity, "reference": "pytorch fp32",
                            "inputs": "example inputs" + (" + a stream of real frames through the FP32 graphs"
                                                          if feeds else ""), "frames": source}
                if a.precision != "fp32":
                    parity_m["fp32_graphs"] = parity32

                def manifest(accuracy, graphs=graphs, parity_m=parity_m, latency=latency, ood=ood):
                    if fallbacks:
                        accuracy = {**accuracy, "fp32_fallbacks": fallbacks}
                    return build_manifest(cfg=cfg, precision=a.precision, checkpoint=ck, graphs=graphs,
                                          parity=parity_m, accuracy=accuracy, calibration=calibration,
                                          latency=latency, export=export_meta, ood=ood, answers=answers,
                                          events=events)

                accuracy, gate, reference = self._gate(fp32_dir, sigs, manifest, ck, parity32, answers, reference)
                if gate is None or gate.passed:
                    break
                back = self._fallback(fp32_dir, graphs_info, gate)
                if back is None:
                    print_summary(cfg.name, a.precision, graphs, parity, latency, target, committed=False)
                    tried = "".join(f"; before, with {f['graph']} {a.precision}: {f['gate']}" for f in fallbacks)
                    raise GateFailed(f"{gate.message()}{tried}; bundle not written")
                fallbacks.append(back)
            export_meta["seconds"] = round(time.time() - t_start, 1)
            writer.commit(manifest(accuracy))
        print_summary(cfg.name, a.precision, graphs, parity, latency, target, committed=True)
        for n in self.notes:
            self.ui.log(f"note: {n}")
        return 0

    def _open_reader(self, cfg):
        """The reader file to export beside the heads (--reader, else the checkpoint's companion), or None."""
        from export.model.checkpoint import DEFAULT_CHECKPOINT, REPO_ROOT
        from export.onnx.reader_graphs import default_reader_path, open_reader

        a = self.args
        ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
        path = Path(a.reader) if getattr(a, "reader", None) else None
        with self.ui.step("load memory reader", total=1) as tick:
            rf = open_reader(path, ckpt, cfg, disabled=getattr(a, "no_reader", False), shown_root=REPO_ROOT,
                             timeline=not getattr(a, "no_timeline", False))
            tick()
        if rf is None:
            why = "--no-reader" if getattr(a, "no_reader", False) else f"no {default_reader_path(ckpt)}"
            self.notes.append(f"heads only: no memory reader graphs ({why})")
            self.ui.log(f"load memory reader: none ({why}): the bundle answers with the query heads")
        elif rf.timeline is None:
            why = "--no-timeline" if getattr(a, "no_timeline", False) else "the reader file has no timeline calibration"
            self.notes.append(f"memory reader without the timeline track ({why})")
        return rf

    def _open_events(self, cfg, ck: dict):
        """The checkpoint's event head file (beside it), or None."""
        from export.model.checkpoint import DEFAULT_CHECKPOINT, REPO_ROOT
        from export.onnx.event_graphs import open_events
        from export.train.event_defaults import default_events_path

        ckpt = self.events_checkpoint = Path(self.args.checkpoint) if self.args.checkpoint else DEFAULT_CHECKPOINT
        products = list((ck.get("labels") or {}).get("products") or [])
        if getattr(self.args, "no_events", False):
            self.notes.append("no event head graph (--no-events)")
            return None
        with self.ui.step("load event head", total=1) as tick:
            ef = open_events(ckpt, cfg, products, shown_root=REPO_ROOT)
            tick()
        if ef is None:
            self.notes.append(f"no event head graph (no {default_events_path(ckpt)})")
        return ef

    def _export_onnx(self, out_dir: Path, ck_sha: str) -> dict:
        import onnx

        from export.onnx import event_graphs, reader_graphs
        from export.onnx.graphs import check_contract, export_graph, io_signature, slim_and_check

        key = (ck_sha, self.cfg.digest(), self.reader.sha256 if self.reader else None,
               self.events.sha256 if self.events else None, _tool_key())
        cached = _ONNX_CACHE.get(key)
        sigs = {}
        with self.ui.step("export ONNX (opset 18) + onnxslim + checker", total=len(self.specs)) as tick:
            for spec in self.specs:
                path = out_dir / f"{spec.name}.onnx"
                if cached:
                    path.write_bytes(cached[spec.name])
                    model = onnx.load(str(path))
                else:
                    with quiet():
                        if spec.name in READER_GRAPHS:
                            reader_graphs.export_graph(self.reader, self.cfg, spec, path)
                        elif spec.name in EVENT_GRAPHS:
                            event_graphs.export_graph(self.events, self.cfg, path)
                        else:
                            export_graph(self.net, spec, path)
                        model = slim_and_check(path)
                check_contract(model, spec)
                sigs[spec.name] = io_signature(model)
                tick()
        if not cached:
            while len(_ONNX_CACHE) >= _ONNX_CACHE_KEEP:
                _ONNX_CACHE.pop(next(iter(_ONNX_CACHE)))  # the oldest
            _ONNX_CACHE[key] = {spec.name: (out_dir / f"{spec.name}.onnx").read_bytes() for spec in self.specs}
        return sigs

    def _feeds(self, cal, fp32_dir: Path):
        """Real inputs for every graph: the frames streamed through the FP32 graphs as the runtime would."""
        if cal is None:
            return None
        from export.onnx.calibration import build_feeds

        n_clips = len(cal) // self.cfg.stream.clip_frames
        with self.ui.step("stream frames through the FP32 graphs",
                          total=-(-len(cal) // self.cfg.stream.clip_frames) + n_clips) as tick:
            feeds = build_feeds(cal, self.cfg, fp32_dir, threads=self.args.threads, tick=tick)
        if self.reader is not None:  # the reader reads the memories the heads were asked on
            from export.onnx.reader_graphs import real_feeds

            feeds.reader, feeds.answer = real_feeds(feeds.heads, fp32_dir / "reader.onnx", self.args.threads,
                                                    self.reader.timeline)
            feeds.notes["reader_calls"] = len(feeds.reader)
        return feeds

    def _parity(self, desc: str, graph_dir: Path, check) -> dict:
        res = {}
        with self.ui.step(desc, total=len(self.specs)) as tick:
            for spec in self.specs:
                res[spec.name] = check.measure(spec, graph_dir / f"{spec.name}.onnx")
                tick()
        return res

    def _convert(self, fp32_dir: Path, feeds, engine: str) -> dict:
        """Write the bundle's graphs at the chosen precision; -> per-graph precision info."""
        a = self.args
        out = self.writer.path
        info: dict[str, dict] = {}
        if a.precision == "fp32":
            for n in self.names:
                shutil.copyfile(fp32_dir / f"{n}.onnx", out / f"{n}.onnx")
                info[n] = {"precision": "fp32", "quantization": None}
            return info
        if a.precision == "fp16":
            import onnx

            from export.onnx.precision import convert_fp16
            from export.onnx.reader_graphs import fp16_failure

            with self.ui.step("FP16 (casts in the graph, FP32 I/O)", total=len(self.specs)) as tick:
                for spec in self.specs:
                    n = spec.name
                    model, pol = convert_fp16(onnx.load(str(fp32_dir / f"{n}.onnx")))
                    onnx.save(model, str(out / f"{n}.onnx"))
                    info[n] = {"precision": "fp16", "quantization": None, "fp16": pol}
                    if n in READER_GRAPHS + EVENT_GRAPHS:
                        why = fp16_failure(self.check.measure(spec, out / f"{n}.onnx"))
                        if why:  # the answer step's MASK_NEG masks and argmax choices may not survive fp16
                            shutil.copyfile(fp32_dir / f"{n}.onnx", out / f"{n}.onnx")
                            info[n] = {"precision": "fp32", "quantization": None,
                                       "note": f"kept FP32: its FP16 form failed parity against PyTorch ({why})"}
                    tick()
            return info
        from export.onnx.int8_choice import int8_graphs
        from export.onnx.graphs import graph_specs

        portable = "TensorRT target" if engine == "tensorrt" else "--int8-portable" if a.int8_portable else None
        info = int8_graphs(fp32_dir, out, feeds, allowed=a.int8_graphs, portable_reason=portable,
                           measure_parity=self.check.measure, ui=self.ui, specs=graph_specs(self.net))
        for n in self.names:
            if n in READER_GRAPHS:
                shutil.copyfile(fp32_dir / f"{n}.onnx", out / f"{n}.onnx")
                info[n] = {"precision": "fp32", "quantization": None,
                           "note": "INT8 bundles keep the memory reader's graphs FP32: they are small, and "
                                   "their masks and argmax choices are not quantised"}
            elif n in EVENT_GRAPHS:
                shutil.copyfile(fp32_dir / f"{n}.onnx", out / f"{n}.onnx")
                info[n] = {"precision": "fp32", "quantization": None,
                           "note": "INT8 bundles keep the event head FP32: it is small beside the backbone"}
        return info

    def _latency(self, fp32_dir: Path, feeds) -> dict:
        from export.onnx.cpu_latency import graph_latency, timed_feed

        a = self.args
        res = {}
        with self.ui.step(f"CPU latency (ORT, {a.threads} threads, {a.bench_runs} runs)", total=len(self.specs)) as tick:
            for spec in self.specs:
                n = spec.name
                if n in EVENT_GRAPHS:  # one clip's frames, as the event path batches them
                    from export.onnx.event_graphs import example_feeds

                    feed = example_feeds(self.cfg, frames=self.cfg.stream.clip_frames)
                else:
                    feed = timed_feed(self.net, self.cfg, spec, feeds, self.reader)
                res[n] = graph_latency(a.precision, self.writer.path / f"{n}.onnx", fp32_dir / f"{n}.onnx",
                                       feed, runs=a.bench_runs, threads=a.threads)
                tick()
        return res

    def _plans(self, engine: str, sigs: dict) -> dict:
        if engine != "tensorrt":
            return {}
        from export.onnx.tensorrt_build import TIMING_CACHE, Profile, build_plan

        a = self.args
        cache = self.writer.path / TIMING_CACHE
        old = self.writer.target / TIMING_CACHE
        if old.is_file():
            shutil.copyfile(old, cache)  # reuse the previous bundle's tactics (validated by TensorRT)
        profile = Profile.for_config(self.cfg)
        plans = {}
        with self.ui.step("TensorRT plans", total=len(GRAPH_NAMES)) as tick:
            for n in GRAPH_NAMES:
                plans[n] = build_plan(self.writer.path / f"{n}.onnx", self.writer.path / f"{n}.plan", sigs[n],
                                      precision=a.precision, profile=profile, timing_cache=cache,
                                      workspace_bytes=a.workspace_mb << 20, log=self.ui.log)
                tick()
        return plans

    def _graph_entries(self, sigs: dict, info: dict, plans: dict) -> dict:
        import onnx

        from export.onnx.bundle_writer import graph_entry
        from export.onnx.graphs import io_signature

        out = {}
        for n in self.names:
            # the I/O as written (FP16 / INT8 graphs keep FP32 I/O; read it back to be sure)
            sig = io_signature(onnx.load(str(self.writer.path / f"{n}.onnx"), load_external_data=False))
            if [t["name"] for t in sig["inputs"]] != [t["name"] for t in sigs[n]["inputs"]]:
                raise ExportFailed(f"{n}: converted graph changed its inputs")
            out[n] = graph_entry(self.writer.path, n, f"{n}.onnx", sig, quantization=info[n].get("quantization"),
                                 plan=plans.get(n), precision=info[n]["precision"], fp16=info[n].get("fp16"),
                                 note=info[n].get("note"))
        return out

    def _gate(self, fp32_dir: Path, sigs: dict, manifest, ck: dict, parity32: dict, answers: dict,
              reference: dict | None = None):
        """-> (manifest accuracy section, GateResult or None, the FP32 reference's metrics to reuse)."""
        a = self.args
        if a.precision == "fp32":
            return {"reference": "fp32", "gate": "not applicable (this is the reference)"}, None, None
        if a.skip_gate:
            self.ui.warn(f"--skip-gate: this {a.precision} bundle was not checked against FP32 accuracy")
            return ({"reference": "fp32", "gate": "skipped (--skip-gate)", "threshold_points": a.gate_threshold},
                    None, None)
        from export.evaluate.accuracy_gate import engine_evaluator, run_gate
        from export.onnx.bundle_writer import build_manifest, graph_entry, write_json_atomic
        from export.onnx.event_graphs import events_section

        # the FP32 reference bundle: same graphs as the fp32 export, with its own manifest
        ref_graphs = {n: graph_entry(fp32_dir, n, f"{n}.onnx", sigs[n], precision="fp32") for n in sigs}
        write_json_atomic(fp32_dir / "manifest.json", build_manifest(
            cfg=self.cfg, precision="fp32", checkpoint=ck, graphs=ref_graphs, parity=parity32, accuracy=None,
            calibration=None, answers=answers, events=events_section(self.events) if self.events else None))
        self.writer.write_manifest(manifest({"gate": "running"}))  # the candidate must load as a bundle
        # kept: a second gate (after a fallback) reuses the videos the first one rendered
        evaluator = self.evaluator = self.evaluator or engine_evaluator(
            videos=a.gate_videos, video_s=a.gate_video_s, queries=a.gate_queries, threads=a.threads,
            backend="auto" if self.engine == "tensorrt" else "onnxruntime", data=self.data.get("test"),
            progress=self.ui.bars)
        with self.ui.step(f"accuracy gate ({a.precision} vs fp32, threshold {a.gate_threshold:g} point{'' if a.gate_threshold == 1 else 's'} R@1x)"):
            res = run_gate(fp32_dir, self.writer.path, evaluator, a.gate_threshold, log=self.ui.progress,
                           reference=reference)
        (self.writer.path / "manifest.json").unlink()  # rewritten, complete, at commit
        for line in res.lines():  # per cell: fp32, candidate, delta and (paired) the answers that changed
            self.ui.log(f"  {line}")
        self.ui.log(res.message())
        return res.manifest(), res, res.reference

    def _fallback(self, fp32_dir: Path, info: dict, gate) -> dict | None:
        """After a failed gate: put the first reduced-precision graph of the memory path (backbone, then
        sampler, then heads: an upstream error reaches every answer) back to FP32, in ``info`` and in the
        bundle; -> what was given up, for the manifest, or None when that graph is the last reduced one
        (the bundle would be the FP32 one under another name). The order is fixed and the gate
        deterministic, so the same inputs give the same bundle."""
        reduced = [n for n in GRAPH_NAMES if info[n]["precision"] != "fp32"]
        if len(reduced) < 2:
            return None
        n = reduced[0]
        was = info[n]
        shutil.copyfile(fp32_dir / f"{n}.onnx", self.writer.path / f"{n}.onnx")
        why = (f"kept FP32: with its {self.args.precision.upper()} form the bundle failed the accuracy gate "
               f"({gate.message()})")
        info[n] = {"precision": "fp32", "quantization": {"mode": "none", "reason": why,
                                                         "rejected": was.get("quantization")}, "note": why}
        self.ui.warn(f"{n}: the {self.args.precision.upper()} bundle failed the accuracy gate "
                     f"({'; '.join(gate.failures)}); trying again with {n} FP32")
        return {"graph": n, "gate": gate.message(), "failures": list(gate.failures)}
