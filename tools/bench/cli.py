#!/usr/bin/env python
"""lvm-edge benchmark: every speed / memory claim measured side by side in one run.

    python -m tools.bench                       # the full run (tens of minutes on 2 cores)
    python -m tools.bench --quick               # tiny sizes, a few minutes; a smoke test, not a measurement
    python -m tools.bench --only P4,P5 --quick --out /tmp/b

Parts (each figure is a ratio or a rate measured in this run, A and B alternated in blocks):
  P1  paper protocol: 30-min generator video, >= 1000 queries; one pass into memory + batched heads vs
      per-query re-processing of the window's frames (activity/time 1 fps, object 5 fps), same ONNX graphs
  P2  streaming real-time factor, lvm-tiny and lvm-edge, ONNX Runtime vs PyTorch eager
  P3  query latency p50/p99 from memory while streaming, after 1 minute and after 10 hours
  P4  RSS and memory-state bytes over a 10-hour accelerated stream
  P5  online SVD: incremental update vs full recompute over a 61-clip window, vs IncrementalPCA, accuracy
  P6  FP32 vs FP16 vs INT8 bundles (lvm-export): per-graph CPU latency and accuracy delta
  P7  backbone FLOP/s as a fraction of this CPU's measured float32 GEMM peak
  P8  many streams in one process: streams sustained in real time, one hub vs separate processes,
      memory per added stream and RSS over hours of stream time
  P9  per-query answer latency from one memory, query heads vs memory reader (same bundle, same memory,
      Engine(answers="heads") vs Engine(answers="reader")), batches of 1 and 32 queries; lvm-tiny (the
      shipped checkpoint) and lvm-edge (fresh weights and a fresh reader: speed only)
  GPU streaming rate of lvm-tiny, lvm-edge and lvm-paper with PyTorch CUDA, FP16 autocast and FP32
      (random weights; only where torch.cuda.is_available())

Writes <out>/results.json, <out>/results.md and <out>/*.png (default out: docs/benchmarks). With --only,
every other part already in <out>/results.json (same schema, same --quick) is kept: its figures, details
and load, whichever earlier run measured it; results.md names the run each kept part comes from.
Weights: checkpoints/lvm-tiny.safetensors when present (or --checkpoint), otherwise a freshly
initialised model (recorded in the outputs); lvm-edge / lvm-paper always use fresh weights (speed only).
Bundles are built with lvm-export and cached in .cache/bench/ (--bundle DIR: the lvm-tiny fp32 one given).
Noise: thread counts are pinned (--threads, default 2); foreign CPU load is measured per part from
/proc/stat and recorded, with a warning when other processes used more than 10% of the machine.
"""
from __future__ import annotations

import argparse
import os
import sys

ALL_PARTS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "GPU")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (2-min video, 50 queries, 2-min accelerated stream): checks the code paths, "
                        "asserts nothing")
    p.add_argument("--out", default="docs/benchmarks", help="output folder (default docs/benchmarks)")
    p.add_argument("--only", help=f"comma-separated parts to run (default all: {','.join(ALL_PARTS)}); the other "
                                    "parts already in <out>/results.json are kept")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for ONNX Runtime, torch and BLAS (default 2)")
    p.add_argument("--checkpoint", help="lvm-tiny checkpoint (default checkpoints/lvm-tiny.safetensors when present, "
                                        "else freshly initialised weights)")
    p.add_argument("--bundle", metavar="DIR",
                   help="the lvm-tiny fp32 bundle the parts run (default: one lvm-export builds from the checkpoint, "
                        "cached in .cache/bench/bundles)")
    p.add_argument("--p1-subset", default="10,6,6",
                   help="P1 baseline: queries timed per type activity,object,time (default 10,6,6); the rest is "
                        "extrapolated")
    p.add_argument("--p9-bundle", metavar="DIR", help="P9's lvm-tiny bundle, with the reader pair (default: the "
                                                       "lvm-tiny fp32 bundle this run builds, with the checkpoint's reader)")
    p.add_argument("--p9-models", default="lvm-tiny,lvm-edge",
                   help="P9: the models measured, comma-separated (default lvm-tiny,lvm-edge; lvm-edge with fresh "
                        "weights and a fresh reader: speed only)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met (never with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("python -m tools.bench: error: --threads must be >= 1", file=sys.stderr)
        return 2
    # pin every thread pool before numpy / torch / onnxruntime are imported
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = ALL_PARTS if not args.only else tuple(x.strip().upper() for x in args.only.split(",") if x.strip())
    bad = [x for x in parts if x not in ALL_PARTS]
    if bad:
        print(f"python -m tools.bench: error: unknown part(s) {', '.join(bad)} (known: {', '.join(ALL_PARTS)})", file=sys.stderr)
        return 2
    try:
        subset = [int(x) for x in args.p1_subset.split(",")]
        assert len(subset) == 3 and min(subset) >= 1
    except (ValueError, AssertionError):
        print("python -m tools.bench: error: --p1-subset needs three positive integers, e.g. 10,6,6", file=sys.stderr)
        return 2
    if args.bundle:
        from edge_runtime.backends.bundle import BundleError, load_bundle

        try:
            given = load_bundle(args.bundle)
        except BundleError as err:
            print(f"python -m tools.bench: error: --bundle {err}", file=sys.stderr)
            return 2
        if (given.model, given.precision) != ("lvm-tiny", "fp32"):
            print(f"python -m tools.bench: error: --bundle {args.bundle}: a {given.model} {given.precision} bundle; "
                  f"the parts take an lvm-tiny fp32 one", file=sys.stderr)
            return 2
    from tools.bench.report import run

    return run(args, parts, {"activity": subset[0], "object": subset[1], "time": subset[2]}, argv)


if __name__ == "__main__":
    sys.exit(main())
