"""Generator videos written as a dataset folder: encoded video files, their annotations and
labels.yaml, so that a model trained from files and one trained on the generator can see the same
videos (``like_train`` / ``like_eval``: exactly lvm-train's and lvm-eval's generator videos).

Encoding is lossy (mp4v by default): every video is decoded back with the runtime's file source and
the PSNR of the decoded frames against the rendered ones is reported and kept in DIR/render.json."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .folder import ANNOTATIONS, LABELS_FILE, VIDEOS
from .labels import DatasetError, LabelSet, read_labels_file

# name -> (FourCC, file extension); ffv1 is lossless (large files), the others are what cameras give
CODECS = {"mp4v": ("mp4v", ".mp4"), "mjpg": ("MJPG", ".avi"), "ffv1": ("FFV1", ".mkv")}
REPORT_FILE = "render.json"
PSNR_IDENTICAL = 100.0  # dB reported for a frame decoded bit-exactly (the true PSNR is infinite)


@dataclass(frozen=True)
class RenderSpec:
    stem: str
    seed: int      # generator seed
    look: int
    split: str


def like_train(indices: list[int], run_seed: int = 0) -> list[RenderSpec]:
    """Videos ``indices`` of ``lvm-train --seed run_seed`` (same generator seed and look)."""
    from edge_runtime.checkout import training_video

    return [RenderSpec(f"train-{i:04d}-s{s}-l{lk}", s, lk, "train") for i in indices
            for s, lk in [training_video(run_seed, i)]]


def like_eval(indices: list[int], run_seed: int = 0) -> list[RenderSpec]:
    """Videos ``indices`` of ``lvm-eval --seed run_seed`` (the held-out seeds and looks)."""
    from edge_runtime.checkout import heldout_video

    return [RenderSpec(f"eval-{i:04d}-s{s}-l{lk}", s, lk, "test") for i in indices
            for s, lk in [heldout_video(run_seed, i)]]


def plain(seeds: list[int], look: int | str | None = None, split: str = "train") -> list[RenderSpec]:
    """Generator seeds as they are; ``look`` None: each seed's own training look."""
    from edge_runtime.checkout.scene import resolve_look

    return [RenderSpec(f"s{s}-l{lk}", s, lk, split) for s in seeds for lk in [resolve_look(look, s)]]


def writable_codec(preferred: str, out_dir: Path, size: int, fps: float) -> str:
    """``preferred`` if this OpenCV build can write it, else mjpg (OpenCV's built-in writer)."""
    from edge_runtime.sources.files import quiet_decoder_logs

    quiet_decoder_logs()  # before the first capture or writer of the process: FFmpeg reads it once
    import cv2

    for name in (preferred, "mjpg"):
        fourcc, ext = CODECS[name]
        probe = out_dir / f".codec-probe{ext}"
        w = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*fourcc), fps, (size, size))
        ok = w.isOpened()
        w.release()
        probe.unlink(missing_ok=True)
        if ok:
            return name
    raise DatasetError(f"{out_dir}: this OpenCV build can write neither {preferred} nor mjpg video")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10.0 * math.log10(255.0**2 / mse))


def render_dataset(out, specs: list[RenderSpec], *, duration_s: float = 1800.0, size: int = 112,
                   fps: float = 1.0, codec: str = "mp4v", crops: bool = True, progress: bool = True,
                   say: Callable[[str], None] = print, shrink=None) -> dict:
    """Render ``specs`` into the dataset folder ``out`` (created, or added to when its labels.yaml
    is the generator's); returns the render report (also written to out/render.json).

    ``crops``: write each instance's generator crop (what lvm-train and lvm-eval show the heads for
    generated videos) as crops/<stem>/<id>.png, so the files differ from the generator only by video
    compression; without them training and evaluation cut crops from the video at the best box.

    ``shrink``: scan-avoidance rates (``CheckoutVideo``'s shrink; None: off, the videos lvm-train and
    lvm-eval use); on, labels.yaml lists pass_around too."""
    from tqdm import tqdm

    from edge_runtime.checkout.shrink import resolve_shrink

    out = Path(out)
    rates = resolve_shrink(shrink)
    labels = LabelSet.generator(shrink=rates is not None)
    _prepare(out, labels)
    codec = writable_codec(codec, out / VIDEOS, size, fps)
    report = _read_report(out)
    n_frames = int(math.floor(duration_s * fps + 1e-9))
    bar = tqdm(total=n_frames * len(specs), unit="frame", desc="lvm-data render", disable=not progress,
               leave=False)
    try:
        for spec in specs:
            try:
                _render_one(out, spec, report, duration_s=duration_s, size=size, fps=fps, codec=codec,
                            crops=crops, rates=rates, bar=bar, say=say)
            except BaseException:  # interrupted or failed mid-video: no video left without its annotation
                _forget(out, spec.stem, report)
                raise
            finally:
                if report["videos"]:  # what is rendered so far is in the report, an interruption or not
                    _write_report(out, report)
    finally:
        bar.close()
    return report


def _render_one(out: Path, spec: RenderSpec, report: dict, *, duration_s, size, fps, codec, crops, rates, bar,
                say) -> None:
    from edge_runtime.checkout import LOOKS, CheckoutVideo

    video = CheckoutVideo(seed=spec.seed, duration_s=duration_s, size=size, look=spec.look, shrink=rates)
    frames = []
    path = _encode(video.frames(fps), out / VIDEOS, spec.stem, codec, size, fps, frames, bar)
    p = _decoded_psnr(path, frames)
    ann = {**video.annotations(), "split": spec.split}
    if crops:
        _write_crops(out, spec.stem, video, ann, size)
    (out / ANNOTATIONS / f"{spec.stem}.json").write_text(json.dumps(ann), encoding="utf-8")
    report["videos"][spec.stem] = {
        "file": path.relative_to(out).as_posix(), "seed": spec.seed, "look": spec.look,
        "look_name": LOOKS[spec.look].name, "split": spec.split, "video_id": ann["video_id"],
        "duration_s": duration_s, "fps": fps, "size": size, "codec": codec, "frames": len(frames),
        "psnr_mean_db": round(float(np.mean(p)), 2), "psnr_min_db": round(float(np.min(p)), 2)}
    if rates is not None:
        report["videos"][spec.stem]["shrink"] = rates.to_dict()
    say(f"lvm-data render: {path.relative_to(out).as_posix()}: {len(frames)} frames, PSNR of the decoded "
        f"frames {np.mean(p):.1f} dB mean, {np.min(p):.1f} dB min")


def _forget(out: Path, stem: str, report: dict) -> None:
    """A video whose rendering did not finish: its file, annotation and crops removed, and its report entry."""
    import shutil

    for f in (out / VIDEOS).glob(f"{stem}.*"):
        f.unlink(missing_ok=True)
    (out / ANNOTATIONS / f"{stem}.json").unlink(missing_ok=True)
    shutil.rmtree(out / "crops" / stem, ignore_errors=True)
    report["videos"].pop(stem, None)


def _write_report(out: Path, report: dict) -> None:
    from edge_runtime.atomic_write import atomic_write_bytes

    vids = report["videos"].values()
    frames_total = sum(v["frames"] for v in vids)
    report["psnr_mean_db"] = round(sum(v["psnr_mean_db"] * v["frames"] for v in vids) / max(1, frames_total), 2)
    report["psnr_min_db"] = min(v["psnr_min_db"] for v in vids)
    report["note"] = ("PSNR of each video's frames decoded from the file (the runtime's file source) against "
                      f"the generator's frames; {PSNR_IDENTICAL:g} dB = bit-exact")
    atomic_write_bytes(out / REPORT_FILE, (json.dumps(report, indent=1) + "\n").encode())


def _write_crops(out: Path, stem: str, video, ann: dict, size: int) -> None:
    import cv2

    folder = out / "crops" / stem
    folder.mkdir(parents=True, exist_ok=True)
    for inst in ann["instances"]:
        rel = f"crops/{stem}/{inst['instance_id']}.png"
        crop = video.object_crop(inst["instance_id"], size=size)
        if not cv2.imwrite(str(out / rel), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise DatasetError(f"{out / rel}: cannot write the crop")
        inst["crop"] = rel


def _prepare(out: Path, labels: LabelSet) -> None:
    try:
        for sub in (VIDEOS, ANNOTATIONS):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"{out}: cannot create the dataset folder ({err.strerror})") from None
    lf = out / LABELS_FILE
    if lf.exists():
        have, _ = read_labels_file(lf)
        if have == labels or _widens(have, labels):
            return
        if not _widens(labels, have):
            raise DatasetError(f"{lf}: not the generator's labels: render into a new folder")
    # videos without shrink into a folder rendered with it, or the other way: activity ids are only
    # ever appended, so the longer list holds both
    lf.write_text(labels.to_yaml(), encoding="utf-8")


def _widens(wide: LabelSet | None, narrow: LabelSet | None) -> bool:
    """``wide`` has ``narrow``'s objects and starts with its activities."""
    return (wide is not None and narrow is not None and wide.objects == narrow.objects
            and wide.activities[: len(narrow.activities)] == narrow.activities)


def _read_report(out: Path) -> dict:
    try:
        rep = json.loads((out / REPORT_FILE).read_text(encoding="utf-8"))
        if isinstance(rep, dict) and isinstance(rep.get("videos"), dict):
            return rep
    except (OSError, ValueError):
        pass
    return {"videos": {}}


def _encode(frames, vdir: Path, stem: str, codec: str, size: int, fps: float, keep: list, bar) -> Path:
    """Write the frames (RGB) to vdir/<stem><ext>; a half-written file never carries the real name."""
    import cv2

    fourcc, ext = CODECS[codec]
    final, tmp = vdir / f"{stem}{ext}", vdir / f".{stem}.partial{ext}"
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (size, size))
    try:
        for _, img in frames:
            w.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            keep.append(img)
            bar.update(1)
    finally:
        w.release()
    for old in vdir.glob(f"{stem}.*"):  # a stem rendered before with another codec: one video per stem
        if old.stem == stem:
            old.unlink()
    os.replace(tmp, final)
    return final


def _decoded_psnr(path: Path, frames: list[np.ndarray]) -> list[float]:
    """PSNR per frame of the file decoded as training and the kiosk decode it, against ``frames``."""
    from edge_runtime.sources.base import SourceError
    from edge_runtime.sources.files import FileSource

    try:
        with FileSource(str(path), target_fps=None) as src:
            decoded = [f.image for f in src]
    except SourceError as err:
        raise DatasetError(f"{path}: written but cannot be decoded back ({err})") from None
    if len(decoded) != len(frames):
        raise DatasetError(f"{path}: {len(frames)} frames written but {len(decoded)} decode back")
    return [psnr(a, b) for a, b in zip(frames, decoded)]
