"""Fit the heads' object-extent output on a trained checkpoint, everything else frozen.

Object answers carry an extent (start/end slots of the object's track, TubeDETR-style). The heads
stage trains it with the other heads from scratch (loss term "extent"); this tool adds it to a
checkpoint trained before the extent existed, without retraining the rest: training-look videos are
streamed through the frozen sampler (as the heads stage does), the frozen heads' decoder slots of
every object query are computed once (memory after a random clip at or after the window's end), and
only ``heads.extent`` trains on them. Every other tensor of the checkpoint is copied unchanged, so
activity, object boxes and time answers stay bit-identical.

    python -m tools.accuracy.fit_extent --checkpoint checkpoints/lvm-tiny.safetensors --out runs/extent
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tools.repo_paths import REPO


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.accuracy.fit_extent", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "lvm-tiny.safetensors"))
    p.add_argument("--out", required=True, help="folder for checkpoint.safetensors and fit_extent.json")
    p.add_argument("--videos", type=int, default=12, help="training-look videos to stream (default 12)")
    p.add_argument("--clips-per-query", type=int, default=2)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from edge_runtime.checkout import training_video
    from safetensors.torch import load_file

    from export.model.checkpoint import checkpoint_config, read_metadata, save_checkpoint
    from export.dataset.video_data import token_cache_dir
    from export.train.heads_stage import stage_videos
    from export.train.losses import interval_loss
    from export.model.lvmnet import LVMNet
    from export.train.query_batch import build_query_batch
    from export.train.joint_stage import compact_memory

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = checkpoint_config(args.checkpoint)
    torch.manual_seed(args.seed)
    net = LVMNet(cfg)
    missing, unexpected = net.load_state_dict(load_file(args.checkpoint), strict=False)
    foreign = [k for k in missing if not k.startswith("heads.extent.")] + list(unexpected)
    if foreign:
        print(f"fit_extent: {args.checkpoint} does not match the model: {', '.join(foreign[:3])}", file=sys.stderr)
        return 2
    print(f"fit_extent: {'fresh' if missing else 'existing'} extent head; {args.videos} videos", flush=True)
    net.eval()
    tc = cfg.train
    n_q = tc.heads_queries_per_video or tc.queries_per_video
    # seeds the heads stage used (lvm-train --seed 0): the same training distribution, no eval seed
    specs = [(*training_video(args.seed, i), tc.video_s, n_q) for i in range(args.videos)]
    t0 = time.time()
    videos = stage_videos(net, specs, workers=args.workers, cache=token_cache_dir())
    t_stage = time.time() - t0

    rng = np.random.default_rng(args.seed)
    heads = net.heads
    slots, masks, s_idx, e_idx = [], [], [], []
    t0 = time.time()
    with torch.no_grad():
        for v in tqdm(videos, desc="fit_extent: decoder slots", leave=False):
            qs = [q for q in v.queries if q.type == "object"]
            if not qs:
                continue
            n_clips = len(v.clip_end)
            first = np.minimum(np.searchsorted(v.clip_end, np.array([q.end for q in qs]) - 1e-6), n_clips - 1)
            for _ in range(args.clips_per_query):
                clip = torch.from_numpy(rng.integers(first, n_clips))
                qb = build_query_batch(qs, [v.crop_tokens] * len(qs), cfg)
                mem = [v.tokens[clip].float(), v.times[clip], v.patches[clip], v.valid[clip]]
                per_q = compact_memory(mem, qb.inputs["q_window"], heads.window_tol)
                _, aux = heads(*per_q, v.basis[clip].float(), v.sv[clip].float(), **qb.inputs, return_aux=True)
                slots.append(aux["slots"])
                masks.append(qb.inputs["q_mask"])
                s_idx.append(qb.start_idx)
                e_idx.append(qb.end_idx)
    L = max(s.shape[1] for s in slots)
    pad = lambda x, v: torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, L - x.shape[1]), value=v)  # noqa: E731
    slots = torch.cat([pad(s, 0.0) for s in slots])
    masks = torch.cat([pad(m, 0.0) for m in masks])
    s_idx, e_idx = torch.cat(s_idx), torch.cat(e_idx)
    t_slots = time.time() - t0
    n = len(slots)
    print(f"fit_extent: {n} (object query, memory) pairs from {len(videos)} videos "
          f"(streamed in {t_stage:.0f} s, slots in {t_slots:.0f} s)", flush=True)

    # hold out a tenth of the pairs (by video order) to watch for over-fitting
    n_val = max(1, n // 10)
    perm = torch.from_numpy(rng.permutation(n))
    val, tr = perm[:n_val], perm[n_val:]
    neg = (1.0 - masks) * -1e4

    def loss_of(idx):
        ext = heads.extent(slots[idx])
        return interval_loss(ext[..., 0] + neg[idx], ext[..., 1] + neg[idx], s_idx[idx], e_idx[idx])

    for prm in net.parameters():
        prm.requires_grad_(False)
    for prm in heads.extent.parameters():
        prm.requires_grad_(True)
    opt = torch.optim.AdamW(heads.extent.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    log = []
    t0 = time.time()
    for step in tqdm(range(args.steps), desc="fit_extent: steps", leave=False):
        idx = tr[torch.from_numpy(rng.integers(0, len(tr), args.batch))]
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 249 or step == args.steps - 1:
            with torch.no_grad():
                v_loss = float(loss_of(val))
            log.append({"step": step + 1, "train": round(float(loss.detach()), 4), "val": round(v_loss, 4)})
            print(f"fit_extent: step {step + 1}: train {float(loss.detach()):.3f}, held-out pairs {v_loss:.3f}", flush=True)
    net.eval()
    meta = {k: v for k, v in read_metadata(args.checkpoint).items() if k not in ("format", "config", "config_sha256")}
    meta["fit_extent"] = json.dumps({"videos": args.videos, "pairs": n, "steps": args.steps, "seed": args.seed})
    save_checkpoint(net, out / "checkpoint.safetensors", meta)
    (out / "fit_extent.json").write_text(json.dumps(
        {"checkpoint": str(args.checkpoint), "videos": args.videos, "pairs": n, "steps": args.steps,
         "stream_s": round(t_stage, 1), "slots_s": round(t_slots, 1), "train_s": round(time.time() - t0, 1),
         "log": log}, indent=1) + "\n")
    print(f"fit_extent: wrote {out / 'checkpoint.safetensors'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
