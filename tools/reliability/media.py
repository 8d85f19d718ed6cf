"""Bad media given to a real ``lvm-edge run --source X``: each must end in one line naming the
source, the documented exit status (2: bad input, refused at the start; 1: a run that failed or
stopped on damage; 0: streamed to the end) and no traceback. A damaged file either is refused or
streams what decodes and says in one line where decoding stopped; which one happened is recorded.

Cases: Debian opencv-doc's Megamind_bugy.avi (tools/fetch_footage.sh; skipped when missing), a
truncated MP4 (its index is at the end: nothing to decode), a truncated MJPG AVI (decodable up to
the cut), a zero-byte file, a directory, a text file named .mp4, /dev/video99, and
rtsp://127.0.0.1:1/x (nothing listens) with --duration (fails after it) and without (retries
until SIGTERM, then exits 0).

``run(quick, workdir, log)`` -> {"passed", "cases": [...]}; ``quick`` changes nothing here (every
case takes seconds).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tools.reliability.common import REPO, default_bundle

DEAD_RTSP = "rtsp://127.0.0.1:1/x"
DEAD_DURATION_S = 6.0
RETRY_WATCH_S = 6.0
STARTUP_BOUND_S = 120.0  # the most a run is given to start and make its first attempt on the source
FOOTAGE_ENV = "LVM_FOOTAGE_DIR"
# (name, exit code, what the line says). This FFmpeg decodes all 270 frames of Megamind_bugy.avi
# with warnings only (packed B-frames, excess bitstream); 3 of them differ strongly from the same
# frames of the undamaged Megamind.avi (mean |difference| > 20 of 255). Nothing the runtime can see
# as damage, so it streams the file to its end (9.0 s at the declared 30 fps).
MEGAMIND_CASE = ("Megamind_bugy.avi (opencv-doc, damaged)", 0, "end of file")


def footage_dir() -> Path:
    """Where tools/fetch_footage.sh keeps Debian opencv-doc's examples/data."""
    base = os.environ.get(FOOTAGE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                      os.path.expanduser("~/.cache"), "lvm-edge", "footage")
    return Path(base) / "opencv-doc" / "examples" / "data"


def write_clips(folder: Path) -> dict[str, Path]:
    """The made-here bad files: truncated MP4 and AVI (half their bytes), empty, directory, text."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, fourcc in (("clip.mp4", "mp4v"), ("clip.avi", "MJPG")):
        full = folder / name
        w = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*fourcc), 5, (160, 120))
        rng = np.random.default_rng(0)
        for i in range(200):  # 40 s at 5 fps: a square moving over a grey counter
            img = np.full((120, 160, 3), 40, np.uint8)
            x = (i * 3) % 130
            img[40:80, x:x + 30] = rng.integers(0, 256, 3, dtype=np.uint8)
            w.write(img)
        w.release()
        data = full.read_bytes()
        out["truncated_" + full.suffix[1:]] = folder / f"truncated_{name}"
        out["truncated_" + full.suffix[1:]].write_bytes(data[: len(data) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "a_directory.mp4").mkdir(exist_ok=True)
    (folder / "text.mp4").write_text("this is not a video\n")
    out.update(empty=folder / "empty.mp4", directory=folder / "a_directory.mp4", text=folder / "text.mp4")
    return out


def _cmd(source: str, state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", "run", "--source", source, "--bundle", str(default_bundle()),
            "--api", "none", "--state-dir", str(state), *extra]


def _messages(stderr: str) -> list[str]:
    """What the run said, without its periodic status lines and routine notes."""
    routine = ("snapshot written to", "API on ")
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[")
            and not any(r in ln for r in routine)]


def check_case(name: str, source: str, expect_rc: int, expect_text: str, state: Path, *extra: str,
         watch_s: float | None = None) -> dict[str, Any]:
    """Run one case. ``watch_s``: a run expected to keep going; SIGTERM it after that long."""
    t0 = time.monotonic()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen(_cmd(source, state, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=REPO, env=env)
    still_running = None
    if watch_s is not None:
        # watched from its first attempt on the source, not from its start: on a busy machine starting
        # (imports, the bundle) can outlast watch_s, and a SIGTERM before the run's handler is in place
        # ends it as a signal would end any process (exit -15), which says nothing about retrying
        lines: list[str] = []
        out_lines: list[str] = []
        tried = threading.Event()

        def read_stderr() -> None:
            for line in p.stderr:
                lines.append(line)
                if source in line:
                    tried.set()
            tried.set()  # ended: nothing more will come

        readers = [threading.Thread(target=read_stderr, daemon=True),
                   threading.Thread(target=lambda: out_lines.extend(p.stdout), daemon=True)]
        for r in readers:
            r.start()
        tried.wait(STARTUP_BOUND_S)
        try:
            p.wait(watch_s)
            still_running = False
        except subprocess.TimeoutExpired:
            still_running = True
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for r in readers:
            r.join(10)
        stdout, stderr = "".join(out_lines), "".join(lines)
    else:
        try:
            stdout, stderr = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
    said = _messages(stderr)
    about_source = [ln for ln in said if source in ln]
    out = {"case": name, "source": source, "exit_code": p.returncode, "expected_exit_code": expect_rc,
           "said": said[-1] if said else None, "lines": len(said), "traceback": "Traceback" in stderr + stdout,
           "seconds": round(time.monotonic() - t0, 1)}
    if watch_s is not None:
        out["still_retrying_after_s"] = watch_s if still_running else None
    live = source.startswith("rtsp://")
    if "[ended]" in stderr:
        out["outcome"] = "streamed what decodes" + (", damage reported" if p.returncode else "")
    elif still_running:
        out["outcome"] = "kept retrying"
    elif live:
        out["outcome"] = "failed when --duration ran out"
    else:
        out["outcome"] = "refused" if p.returncode else "streamed"
    # A file: one line in all. A live source: one line per failed attempt while it retries (the
    # kiosk's log), then one line for the end.
    one_line = len(about_source) == 1 if not live else len(about_source) >= len(said) - 1 >= 0
    out["passed"] = (p.returncode == expect_rc and not out["traceback"] and one_line
                     and expect_text in (out["said"] or "") and (watch_s is None or bool(still_running)))
    return out


def run(quick: bool, workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    clips = write_clips(workdir / "media")
    state = workdir / "state"
    cases: list[tuple] = []
    bugy = footage_dir() / "Megamind_bugy.avi"
    skipped = []
    if bugy.is_file():
        cases.append(MEGAMIND_CASE[:1] + (str(bugy),) + MEGAMIND_CASE[1:])
    else:
        skipped.append(f"Megamind_bugy.avi: not at {bugy} (run tools/fetch_footage.sh)")
    cases += [
        ("truncated MP4 (index lost)", str(clips["truncated_mp4"]), 2, "cannot open"),
        ("truncated MJPG AVI", str(clips["truncated_avi"]), 1, "truncated or damaged"),
        ("zero-byte file", str(clips["empty"]), 2, "file is empty"),
        ("directory", str(clips["directory"]), 2, "is a directory"),
        ("text file named .mp4", str(clips["text"]), 2, "cannot open"),
        ("/dev/video99", "/dev/video99", 2, "no such camera"),
        (f"{DEAD_RTSP} with --duration {DEAD_DURATION_S:g}", DEAD_RTSP, 1, "no frame received"),
    ]
    results = []
    for i, (name, source, rc, text) in enumerate(cases):
        extra = ("--duration", f"{DEAD_DURATION_S:g}") if source == DEAD_RTSP else ()
        results.append(check_case(name, source, rc, text, state / str(i), *extra))
    results.append(check_case(f"{DEAD_RTSP} without --duration", DEAD_RTSP, 0, "SIGTERM", state / "retry",
                        watch_s=RETRY_WATCH_S))
    for r in results:
        log(f"  {r['case']}: {r['outcome']}, exit {r['exit_code']} ({'ok' if r['passed'] else 'FAILED'}): {r['said']}")
    return {"passed": all(r["passed"] for r in results), "skipped": skipped, "cases": results}
