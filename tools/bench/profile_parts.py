"""Parameter count and CPU latency (batch 1) of each part of each model config, PyTorch eager.

    python -m tools.bench.profile_parts [--threads 2] [--configs lvm-tiny lvm-edge lvm-paper] [--json out.json]

Timings: median and min-max of repeated calls after a warm-up, one part at a time, with the thread
count pinned. Weights are random (speed does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _time(fn, reps: int) -> dict:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": round(statistics.median(ts), 2), "min_ms": round(min(ts), 2), "max_ms": round(max(ts), 2),
            "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["lvm-tiny", "lvm-edge", "lvm-paper"])
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    from edge_runtime.config import resolve_model_config
    from export.model.lvmnet import LVMNet, count_parameters

    torch.set_num_threads(args.threads)
    results = {}
    for name in args.configs:
        cfg = resolve_model_config(name)
        torch.manual_seed(0)
        net = LVMNet(cfg).eval()
        heavy = name == "lvm-paper"
        reps = 3 if heavy else 15
        s, P, d = cfg.backbone.image_size, cfg.backbone.tokens_per_frame, cfg.backbone.dim
        m, k, r, L = cfg.stream.memory_tokens, cfg.clip_tokens, cfg.svd.n_components, cfg.heads.window_queries
        frame = torch.randint(0, 256, (1, s, s, 3), dtype=torch.uint8)
        mem = (torch.randn(1, m, d), torch.arange(m, dtype=torch.float32)[None] / P, torch.arange(m)[None] % P,
               torch.ones(1, m))
        ct, cp = net.clip_coords(1000.0 + torch.arange(cfg.stream.clip_frames, dtype=torch.float32)[None])
        clip = torch.randn(1, k, d)
        q = (torch.tensor([0]), torch.tensor([0]), torch.randn(1, P, d), torch.tensor([[0.0, float(m // P)]]),
             torch.linspace(0, m // P, L)[None], torch.ones(1, L))
        basis = torch.linalg.qr(torch.randn(d, r)).Q.T[None]
        sv = torch.linspace(10, 1, r)[None]
        carry = mem + ((net.sampler.empty_state(1),) if net.sampler.has_state else ())
        with torch.inference_mode():
            parts = {
                "backbone": (net.backbone, lambda: net.backbone(frame), "1 frame"),
                "sampler": (net.sampler, lambda: net.sampler(*carry, clip, ct, cp), f"m={m} + k={k} tokens"),
                "heads": (net.heads, lambda: net.heads(*mem, basis, sv, *q), f"1 query, L={L}"),
            }
            res = {}
            for part, (mod, fn, what) in parts.items():
                res[part] = {"params": count_parameters(mod), "input": what, **_time(fn, reps)}
                print(f"{name:10s} {part:9s} {res[part]['params']:>12,d} params  {what:24s} "
                      f"median {res[part]['median_ms']:9.2f} ms  [{res[part]['min_ms']:.2f}, {res[part]['max_ms']:.2f}]",
                      flush=True)
        results[name] = res
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"threads": args.threads, "torch": torch.__version__, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
