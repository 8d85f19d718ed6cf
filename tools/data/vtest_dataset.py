"""Build a dataset folder (the lvm-data layout) from OpenCV's vtest.avi and the hand-made annotation in
tests/data/vtest/.

    python -m tools.data.vtest_dataset --out data/vtest            # fetches the footage if needed
    python -m tools.data.vtest_dataset --out data/vtest --video /path/to/vtest.avi --copy

The folder gets labels.yaml, videos/, annotations/ and splits.yaml. There is one annotated video, so it
is used twice: stem ``vtest`` is the train split and stem ``vtest_test`` (the same file under a second
name, its annotation a copy with its own video_id) is the test split. That is a smoke path (it shows the
pipeline runs on real footage in its own labels), not a measure of generalisation: the test video is the
training video. ``--train-only`` leaves the test copy out.

The video is symlinked (``--copy`` copies it); it is never part of the repository. Exit status 2 with one
line on stderr when the footage cannot be had."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tools.repo_paths import REPO

SOURCE = REPO / "tests" / "data" / "vtest"
STEM, TEST_STEM = "vtest", "vtest_test"


def fetch_video() -> Path:
    """vtest.avi from tools/fetch_footage.sh (its cache, else Debian's opencv-doc); SystemExit(2) if none."""
    try:
        res = subprocess.run(["bash", str(REPO / "tools" / "fetch_footage.sh")], check=False, capture_output=True,
                             text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SystemExit(f"vtest_dataset: cannot run tools/fetch_footage.sh ({err})") from None
    video = Path(res.stdout.strip() or ".") / "vtest.avi"
    if res.returncode != 0 or not video.is_file():
        why = (res.stderr.strip().splitlines() or ["no reason given"])[-1]
        print(f"vtest_dataset: footage not available: {why}", file=sys.stderr)
        raise SystemExit(2)
    return video


def place_video(src: Path, dst: Path, copy: bool) -> None:
    dst.unlink(missing_ok=True)
    if copy:
        shutil.copyfile(src, dst)
    else:
        dst.symlink_to(src.resolve())


def build(out: Path, video: Path, *, copy: bool = False, test_copy: bool = True) -> Path:
    """Write the dataset folder ``out`` (created or refreshed in place) and return it."""
    if not video.is_file():
        raise SystemExit(f"vtest_dataset: {video}: no such file")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE / "labels.yaml", out / "labels.yaml")
    ann = json.loads((SOURCE / "annotations" / f"{STEM}.json").read_text(encoding="utf-8"))
    stems = {"train": [STEM]}
    if test_copy:
        stems["test"] = [TEST_STEM]
    for (stem,) in stems.values():
        place_video(video, out / "videos" / f"{stem}{video.suffix}", copy)
        body = dict(ann, video_id=stem)
        (out / "annotations" / f"{stem}.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    if not test_copy:
        for stale in (out / "videos" / f"{TEST_STEM}{video.suffix}", out / "annotations" / f"{TEST_STEM}.json"):
            stale.unlink(missing_ok=True)
    lines = [f"{split}: [{', '.join(s)}]" for split, s in stems.items()]
    (out / "splits.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.data.vtest_dataset", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    ap.add_argument("--video", type=Path, help="vtest.avi to use (default: tools/fetch_footage.sh's copy)")
    ap.add_argument("--copy", action="store_true", help="copy the video instead of symlinking it")
    ap.add_argument("--train-only", action="store_true",
                    help="only the train split (no second name for the video as the test split)")
    args = ap.parse_args(argv)
    video = args.video or fetch_video()
    out = build(args.out, video, copy=args.copy, test_copy=not args.train_only)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
