"""What the online SVD summary adds to the memory reader's answers: the same bundle, videos and
queries, answered with the summary as the stream keeps it and with it zeroed at every commit.

    python -m tools.accuracy.svd_share --bundle engines/lvm-tiny-fp32 --json docs/lab/accuracy/svd_share_reader.json

At each commit the reader graph reads the memory, its timeline rows and the stream's SVD state
(``svd_basis``, ``svd_sv``): the summary enters as r extra tokens and as the memory's projection on
the basis (export/model/reader.py). "Zeroed" feeds zeros for both, which removes the SVD tokens
(a token is kept where its singular value is > 0) and the projection. The reader was trained with
the summary, so this measures what it takes from it, not what a reader trained without it would do.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tools.repo_paths import REPO

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SVD_INPUTS = ("svd_basis", "svd_sv")


class ZeroSVD:
    """A reader runner whose SVD inputs are zeros; everything else passes through."""

    def __init__(self, runner) -> None:
        self._runner = runner

    def infer(self, feed):
        import numpy as np

        return self._runner.infer({k: (np.zeros_like(v) if k in SVD_INPUTS else v) for k, v in feed.items()})

    def __getattr__(self, name):
        return getattr(self._runner, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.svd_share", description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=str(REPO / "engines" / "lvm-tiny-fp32"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)

    from edge_runtime.backends.bundle import BundleError
    from edge_runtime.engine.engine import Engine
    from export.evaluate.scoring import engine_videos, evaluate_engine

    try:
        engine = Engine(args.bundle, threads=args.threads, answers="reader")
    except (BundleError, ValueError, OSError) as err:
        print(f"svd_share: --bundle {args.bundle}: {err}", file=sys.stderr)
        return 2
    videos = engine_videos(engine.cfg, args.queries, args.seed, videos=args.videos, video_s=args.video_s,
                           absent_share=0.0, progress=False)
    runs = {}
    with_svd = engine.reader
    for name, reader in (("with_svd", with_svd), ("svd_zeroed", ZeroSVD(with_svd))):
        engine.reader = reader
        res = evaluate_engine(lambda: engine, videos, progress=False)
        runs[name] = {k: res[k] for k in ("recall@1x", "recall@3x", "count")}
        print(name, json.dumps({t: {w: round(100 * v, 1) for w, v in c.items()} for t, c in res["recall@1x"].items()}),
              flush=True)
    engine.close()
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    out = {"tool": "tools/accuracy/svd_share.py", "bundle": Path(args.bundle).name,
           "reader_sha256": ((manifest.get("answers") or {}).get("reader") or {}).get("file_sha256"),
           "seed": args.seed, "videos": args.videos, "video_s": args.video_s, "queries_per_video": args.queries,
           "runs": runs,
           "delta_r1x_points": {t: {w: round(100 * (runs["with_svd"]["recall@1x"][t][w] - runs["svd_zeroed"]["recall@1x"][t][w]), 1)
                                    for w in runs["with_svd"]["recall@1x"][t]} for t in runs["with_svd"]["recall@1x"]}}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
