"""The timeline track's price in streaming rate: `lvm-edge demo` on a bundle with the track and on the
same model exported without it (``lvm-export --no-timeline``), alternated, as video-seconds per second.

    python -m tools.bench.timeline_cost --with engines/lvm-tiny-fp32 --without /tmp/lvm-tiny-no-timeline \\
        [--rounds 5] [--threads 2] [--json out.json]

Each round runs both (the order alternating), so a change in machine load falls on both; the figure is
the median of the per-round ratios, with over without (< 1: the track costs the rest of the rate).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tools.bench.common import alternate, ratio_spread

RATE = re.compile(r"([0-9.]+) video-seconds per second")


def demo_rate(bundle: Path, threads: int) -> float:
    """One `lvm-edge demo` run -> the video-seconds per second it printed."""
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "demo", "--bundle", str(bundle), "--threads",
                          str(threads)], capture_output=True, text=True, timeout=1800)
    found = RATE.search(res.stdout)
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        raise SystemExit(f"timeline_cost: lvm-edge demo --bundle {bundle} failed: {tail[0]}")
    return float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--with", dest="with_", required=True, type=Path, help="bundle with the timeline track")
    ap.add_argument("--without", required=True, type=Path, help="the same model exported with --no-timeline")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    for b in (a.with_, a.without):
        if not (b / "manifest.json").is_file():
            ap.error(f"{b}: no bundle there (no manifest.json)")
    bundles = {"with": a.with_, "without": a.without}
    rates = alternate({name: (lambda _r, b=b: demo_rate(b, a.threads)) for name, b in bundles.items()}, a.rounds)
    ratio = ratio_spread(rates["with"], rates["without"])
    out = {"bundles": {k: str(v) for k, v in bundles.items()}, "threads": a.threads, "rounds": a.rounds,
           "video_s_per_s": rates,
           "median": {k: float(np.median(v)) for k, v in rates.items()},
           "ratio_with_over_without": {k: ratio[k] for k in ("median", "min", "max")}}
    print(json.dumps(out["median"]), "ratio", json.dumps(out["ratio_with_over_without"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
