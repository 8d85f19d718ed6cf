"""What an export starts from: checked arguments, the model, the target engine, the frames.

Each check here runs before the slow steps, so bad input fails in seconds with one line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.backends.bundle import GRAPH_NAMES
from export.cli.common import UsageError
from export.onnx.ui import UI, one_line, quiet


def validate_args(a) -> None:
    """Range checks the parser cannot do; ``a.int8_graphs`` becomes a set of graph names."""
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
    if a.precision != "int8" and (a.int8_graphs is not None or a.int8_portable):
        raise UsageError(f"--{'int8-graphs' if a.int8_graphs is not None else 'int8-portable'} is for "
                         f"--precision int8 (this export is {a.precision})")
    names = [g.strip() for g in (a.int8_graphs or ",".join(GRAPH_NAMES)).split(",") if g.strip()]
    unknown = sorted(set(names) - set(GRAPH_NAMES))
    if unknown or not names:
        raise UsageError(f"--int8-graphs: unknown graph {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(GRAPH_NAMES)}")
    a.int8_graphs = set(names)
    if a.workspace_mb < 16:
        raise UsageError(f"--workspace-mb must be >= 16, got {a.workspace_mb}")


def load_model(a):
    """-> (config, net in eval mode, the manifest's checkpoint section)."""
    from edge_runtime.file_hash import sha256_file
    from edge_runtime.config import resolve_model_config
    from export.model.checkpoint import DEFAULT_CHECKPOINT, REPO_ROOT, CheckpointError, checkpoint_labels, load_checkpoint

    ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
    if a.config:
        cfg = resolve_model_config(a.config)
    elif a.checkpoint:
        cfg = None  # the checkpoint's own config
    else:
        cfg = resolve_model_config(REPO_ROOT / "configs" / "models" / "lvm-tiny.yaml")
    with quiet():
        net, meta = load_checkpoint(ckpt, cfg)
    cfg = cfg or net.cfg
    net.eval()
    try:
        shown = str(ckpt.resolve().relative_to(REPO_ROOT))
    except ValueError:
        shown = str(ckpt)
    info = {"path": shown, "sha256": sha256_file(ckpt), "format": meta.get("format"),
            "config_sha256": meta.get("config_sha256")}
    info.update({k: meta[k] for k in ("seed", "steps", "epoch", "command", "backbone_init") if k in meta})
    try:
        info["labels"] = checkpoint_labels(meta)
    except CheckpointError as err:
        raise CheckpointError(f"{ckpt}: {err}") from None
    if info["labels"] is not None and len(info["labels"]["activities"]) != cfg.heads.num_activities:
        raise CheckpointError(f"{ckpt}: its labels name {len(info['labels']['activities'])} activities, "
                              f"the model has {cfg.heads.num_activities}")
    return cfg, net, info


def choose_engine(want: str, notes: list[str]) -> str:
    """--engine resolved on this host: "tensorrt" (plans are built) or "onnxruntime"."""
    from export.onnx import tensorrt_build

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
        notes.append("TensorRT is installed but no CUDA GPU was found: no plans built")
    return "onnxruntime"


def open_data(a, notes: list[str]) -> dict:
    """--data: {"train": DataSplit for calibration (unless --calib wins) and the OOD statistics;
    "test": DataSplit for the gate, unless no gate runs}; {} without --data. Bad folders and empty
    splits fail here, in a second."""
    if a.data is None:
        return {}
    from export.dataset import DatasetError
    from export.dataset.eval_data import DataSplit

    want = ["train"]
    if a.precision != "fp32" and not a.skip_gate:
        want.append("test")
    try:
        return {name: DataSplit.open(Path(a.data), name) for name in want}
    except DatasetError as err:
        raise UsageError(f"--data {one_line(err)}") from None


def check_data_labels(data: dict, ck: dict) -> None:
    """The checkpoint must name the dataset's activities: the gate asks in its labels, and the
    bundle answers in the checkpoint's."""
    from export.dataset.eval_data import labels_mismatch

    split = next(iter(data.values()), None)  # every split of a folder has its labels
    problem = split and labels_mismatch(ck["labels"], split.labels, Path(ck["path"]), split.root)
    if problem:
        raise UsageError(problem)


def read_calibration(a, cfg, ui: UI, notes: list[str], train=None):
    """Real frames for INT8 calibration and parity, or None when the default source has none and
    the export can do without (parity then runs on example inputs only). INT8 never goes without.
    ``train``: a dataset's train split (--data), read unless --calib names a source."""
    from export.onnx.calibration import DEFAULT_CALIB_URI, CalibrationError, read_frames, read_video_files

    n = a.calib_frames if a.precision == "int8" else min(a.calib_frames, 4 * cfg.stream.clip_frames)
    if train is not None and not a.calib:
        label = f"{train.root} ({train.split} split, {len(train.items)} videos)"
        with ui.step(f"frames from {label}", total=n) as tick:
            try:
                return read_video_files([it.video for it in train.items], label, cfg, max_frames=n, tick=tick)
            except CalibrationError as err:
                if a.precision == "int8":
                    raise CalibrationError(f"refusing INT8: {one_line(err)}") from None
                raise
    uri = a.calib or DEFAULT_CALIB_URI
    with ui.step(f"frames from {uri}", total=n) as tick:
        try:
            return read_frames(uri, cfg, max_frames=n, tick=tick)
        except CalibrationError as err:
            if a.calib or a.precision == "int8":
                if a.precision == "int8":
                    raise CalibrationError(f"refusing INT8: {one_line(err)}") from None
                raise
            notes.append(f"parity on example inputs only ({one_line(err)})")
            return None
