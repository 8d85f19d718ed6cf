"""lvm-export: a trained checkpoint -> a bundle of ONNX graphs (and TensorRT plans) with a manifest.

This module is the command line: the parser, and every way an export ends mapped to one line and an
exit status. The steps themselves are ``export.onnx.exporter.Exporter``.
"""
from __future__ import annotations

import argparse
import sys

from export.cli.common import UsageError, run_cli
from export.evaluate.accuracy_gate import GATE_QUERIES, GATE_VIDEOS
from export.onnx.ui import PROG, one_line
from export.onnx.exporter import Exporter, ExportFailed, GateFailed

PRECISIONS = ("fp32", "fp16", "int8")
ENGINES = ("auto", "onnxruntime", "tensorrt")
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
            "(opset 18) in FP32, FP16 (FP32 I/O) or INT8, with the checkpoint's memory reader as its reader "
            "and answer graphs (FP32 in an INT8 bundle), TensorRT plans where TensorRT is installed, and a "
            "manifest.json with hashes, I/O signatures, parity against PyTorch, CPU latency and the accuracy "
            "gate's deltas. The bundle is written to a temp folder and moved into place only when complete."),
        epilog=(
            "examples:\n"
            "  lvm-export --precision fp32\n"
            "  lvm-export --precision fp16 --skip-gate\n"
            "  lvm-export --precision int8 --calib 'demo://checkout?seed=7000000&duration=600'\n"
            "  lvm-export --precision int8 --calib footage/kiosk.mp4 --gate-threshold 2\n"
            "  lvm-export --precision int8 --data footage/ --checkpoint runs/mine/lvm-tiny.safetensors\n"
            "\n"
            "INT8 is calibrated on real frames (the checkout generator by default, any video file with\n"
            "--calib, or a dataset's train split with --data; --calib wins when both are given);\n"
            "a source that yields no frames is refused. For an ONNX Runtime target the form is chosen per\n"
            "graph by accuracy, never by timing, among symmetric Q/DQ (loads in ORT and TensorRT), Q/DQ\n"
            "with uint8 activations (backbone) and dynamic quantisation (sampler, heads; ORT only). The\n"
            "backbone's forms keep its first convolution and its last 2, 4, ... convolutions (with every\n"
            "node after them) FP32. Of the candidates within their graph's budget on the calibration\n"
            "stream (sampler: top-m recall 0.99; others: mean error 0.5% of the output's scale; the\n"
            "backbone also: its frame-to-frame token changes moved by at most 15%), the one keeping the\n"
            "fewest convolutions FP32 wins, then the closest to FP32; a graph with none within budget\n"
            "stays FP32 (the manifest says why).\n"
            "TensorRT targets and --int8-portable use the symmetric Q/DQ form only.\n"
            "The accuracy gate is paired (both bundles answer the same queries) and prints per cell its\n"
            "queries and how many answers the candidate changed for the better and the worse. When it\n"
            "fails, the first reduced graph of backbone, sampler, heads goes back to FP32 and the gate runs\n"
            "again, until it passes; exit 3 when only one reduced graph was left to give up.\n"
            "exit status: 0 ok, 1 export failed (parity, TensorRT), 2 bad input, 3 accuracy gate failed."))
    p.add_argument("--precision", required=True, choices=PRECISIONS, metavar="{fp32,fp16,int8}",
                   help="numeric precision of the graphs")
    p.add_argument("--config", help="model config YAML or name (default: the checkpoint's own config; "
                                    "configs/models/lvm-tiny.yaml for the shipped checkpoint)")
    p.add_argument("--checkpoint", help="safetensors checkpoint (default: checkpoints/lvm-tiny.safetensors)")
    rd = p.add_mutually_exclusive_group()
    rd.add_argument("--reader", metavar="PATH",
                    help="memory reader file (lvm-reader/1) trained for this checkpoint's model config, exported "
                         "as the bundle's reader and answer graphs beside the heads (default: "
                         "<checkpoint dir>/<checkpoint stem>-reader.safetensors when that file exists)")
    rd.add_argument("--no-reader", action="store_true", help="export the heads only, without the memory reader")
    p.add_argument("--no-events", action="store_true",
                   help="leave out the event head (beside the checkpoint as <name>-events.safetensors): the bundle "
                        "streams at the memory's fps and has no item tracks")
    p.add_argument("--no-timeline", action="store_true",
                   help="the reader without its timeline track (the per-frame FIFO of the last 30 minutes its answers "
                        "read beside the memory; exported by default when the reader file is calibrated for it)")
    p.add_argument("--out", help="bundle folder (default: engines/<model>-<precision>/); an existing bundle "
                                 "there is replaced only after the new one is complete")
    p.add_argument("--calib", help="calibration / parity frames: demo://checkout?seed=N&duration=S or a video "
                                   "file (default: the --data train split, else demo://checkout?seed=7000000&duration=600&shrink=0)")
    p.add_argument("--data", metavar="DIR",
                   help="a dataset folder (labels.yaml, videos/, annotations/) the checkpoint was trained on: "
                        "calibration / parity frames from its train split's videos (--calib, when given, wins "
                        "for those) and the accuracy gate on every video of its test split (--gate-videos and "
                        "--gate-video-s then do not apply)")
    p.add_argument("--calib-frames", type=int, default=600,
                   help="frames read from --calib for INT8 calibration (default 600)")
    p.add_argument("--engine", choices=ENGINES, default="auto", metavar="{auto,onnxruntime,tensorrt}",
                   help="target: tensorrt builds plans (needs TensorRT); auto does so when TensorRT and a GPU "
                        "are present (default auto)")
    p.add_argument("--int8-portable", action="store_true",
                   help="INT8 only in the symmetric Q/DQ form TensorRT also loads, even for an ONNX Runtime target "
                        "(default for onnxruntime: the form closest to FP32 per graph, which may be ORT-only)")
    p.add_argument("--int8-graphs", metavar="NAMES",
                   help="with --precision int8: comma list of the graphs that may be INT8; the others stay FP32 "
                        "(default all three, each kept FP32 anyway where INT8 is outside its accuracy budget)")
    p.add_argument("--gate-threshold", type=float, default=1.0, metavar="POINTS",
                   help="largest allowed Recall@1x drop vs FP32 per query type and window, in points (default 1)")
    p.add_argument("--skip-gate", action="store_true", help="export without the accuracy gate (recorded in the manifest)")
    p.add_argument("--gate-videos", type=int, default=GATE_VIDEOS,
                   help=f"held-out generator videos for the gate (default {GATE_VIDEOS}: the queries on one video's "
                        "instance share an answer, so the gate's sample grows with videos more than with queries)")
    p.add_argument("--gate-video-s", type=float, default=1800.0, help="seconds per generator gate video (default 1800)")
    p.add_argument("--gate-queries", type=int, default=GATE_QUERIES,
                   help=f"queries per gate video (default {GATE_QUERIES}: one changed answer moves a cell well under "
                        "the threshold; the gate reports per cell its queries and how many answers changed each way)")
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


def _run(args, evaluator) -> int:
    from export.evaluate.accuracy_gate import GateError
    from export.onnx.bundle_writer import BundleWriteError
    from export.onnx.calibration import CalibrationError
    from export.onnx.precision import PrecisionError
    from export.onnx.tensorrt_build import TensorRTBuildError

    try:
        return Exporter(args, evaluator).run()
    except (CalibrationError, BundleWriteError, GateError) as err:
        raise UsageError(one_line(err)) from None
    except GateFailed as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_GATE
    # export failed (parity, TensorRT), or the disk filled up or a folder went away underneath us
    except (ExportFailed, PrecisionError, TensorRTBuildError, OSError) as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
