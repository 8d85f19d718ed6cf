"""lvm-train: train an LVM-Net config on the procedural checkout benchmark."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from export.cli_common import UsageError, run_cli

SEED_MAX = 2**31 - 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvm-train",
        description="Train LVM-Net (frozen backbone, neural sampler, query heads) on generated checkout "
                    "videos. The tiny backbone is first pre-trained on the generator's per-frame labels, "
                    "then frozen. Stage 1 trains sampler and heads on the streams (CPU; under torchrun, "
                    "DDP with gloo); stage 2, the heads stage (config train.heads_steps), trains the heads "
                    "alone on the frozen sampler's memories (a GPU if there is one: hours on CPU).",
        epilog="Example: lvm-train --config configs/models/lvm-tiny.yaml --out runs/tiny")
    p.add_argument("--config", required=True, help="model config YAML (configs/models/*.yaml)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.safetensors, train_log.jsonl, ...")
    p.add_argument("--epochs", type=int, help="epochs (default: config train.epochs)")
    p.add_argument("--videos", type=int, help="training videos (default: config train.train_videos)")
    p.add_argument("--video-s", type=float, help="seconds per training video (default: config train.video_s)")
    p.add_argument("--queries", type=int, help="queries sampled per video (default: config)")
    p.add_argument("--seed", type=int, help="seed (default: config train.seed)")
    p.add_argument("--backbone-epochs", type=int, default=3, help="backbone pre-training epochs (default 3)")
    p.add_argument("--backbone-frames", type=int, default=3000,
                   help="frames sampled for backbone pre-training, busy and idle balanced (default 3000)")
    p.add_argument("--backbone-from", help="take the frozen backbone from this checkpoint (or another run's "
                   "backbone.safetensors) instead of pre-training")
    p.add_argument("--sampler-from", help="skip stage 1: take the frozen backbone and the trained sampler from this "
                   "checkpoint and train fresh heads in the heads stage alone")
    p.add_argument("--heads-steps", type=int, help="steps of the heads stage, the heads alone on the frozen sampler's "
                   "memories (default: config train.heads_steps; 0 = no heads stage). Not resumable: --resume "
                   "re-runs it from the stage-1 checkpoint")
    p.add_argument("--heads-videos", type=int, help="videos the heads stage streams (default: config "
                   "train.heads_videos, else --videos)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the heads stage trains (default auto: cuda if available; stage 1 runs on CPU)")
    p.add_argument("--workers", type=int, help="processes that render, encode and stream the heads stage's videos "
                   "(default: CPU cores)")
    p.add_argument("--no-continual", action="store_true", help="ablation: train without the continual-learning loss")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors + optimizer state")
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: CPU cores / processes)")
    p.add_argument("--max-steps", type=int, help="stop after this many sampler steps (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-token-cache", action="store_true",
                   help="always run the backbone (default: reuse tokens kept in $LVM_EDGE_CACHE/tokens, "
                        "~/.cache/lvm-edge/tokens, keyed by the backbone's weights and the video)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("lvm-train", lambda: _train(args))


def _train(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edge_runtime.config import load_model_config

    cfg = load_model_config(args.config)
    tc = cfg.train
    seed = tc.seed if args.seed is None else args.seed
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be in [0, {SEED_MAX}], got {seed}")
    for name in ("epochs", "videos", "queries", "backbone_epochs", "max_steps", "threads", "heads_steps",
                 "heads_videos", "workers"):
        v = getattr(args, name)
        if v is not None and v < (0 if name in ("backbone_epochs", "heads_steps") else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
    video_s = tc.video_s if args.video_s is None else args.video_s
    if video_s < cfg.stream.clip_frames / cfg.stream.fps * 2:
        raise UsageError(f"--video-s {video_s} is shorter than two clips ({cfg.stream.clip_frames / cfg.stream.fps * 2:g} s)")
    if args.backbone_from:  # before anything is rendered or created
        from export.checkpoint import CheckpointError, refuse_pickle
        try:
            refuse_pickle(args.backbone_from)
        except CheckpointError as err:
            raise UsageError(str(err)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"  # per process: DDP ranks check the same folder at once
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out {out}: not writable ({err.strerror})") from None

    heads_steps = tc.heads_steps if args.heads_steps is None else args.heads_steps
    if args.sampler_from and heads_steps == 0:
        raise UsageError("--sampler-from trains only the heads stage: give --heads-steps N (N > 0)")
    if args.sampler_from and args.backbone_from:
        raise UsageError("--sampler-from already gives the backbone: drop --backbone-from")
    if args.sampler_from and args.resume:
        raise UsageError("--sampler-from and --resume do not mix: the heads stage is not resumable")

    import torch
    import torch.distributed as dist

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch")

    from edge_runtime.checkout import ACTIVITIES, training_video
    from export.checkpoint import save_checkpoint
    from export.data import token_cache_dir
    from export.model import LVMNet, count_parameters

    if cfg.heads.num_activities != len(ACTIVITIES):
        raise UsageError(f"{args.config}: heads.num_activities={cfg.heads.num_activities} but the benchmark has "
                         f"{len(ACTIVITIES)} activities")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        from datetime import timedelta
        # a rank that dies or diverges turns into an error after 10 minutes, not a silent hang
        dist.init_process_group("gloo", timeout=timedelta(minutes=10))
    rank = dist.get_rank() if world > 1 else 0
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) // world))
    progress = not args.no_progress and rank == 0
    n_videos = args.videos or tc.train_videos
    if n_videos < world:
        raise UsageError(f"--videos {n_videos} < {world} ranks: every rank needs its own videos")

    def say(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)

    t0 = time.time()
    torch.manual_seed(seed)
    net = LVMNet(cfg)
    say(f"lvm-train: {cfg.name}: backbone {count_parameters(net.backbone):,} params (frozen), "
        f"sampler {count_parameters(net.sampler):,}, heads {count_parameters(net.heads):,}")
    cache = None if args.no_token_cache else token_cache_dir()
    res, continual_p = None, 0 if args.no_continual else tc.continual_p
    if args.sampler_from:
        from export.checkpoint import load_stage1_state
        net.load_state_dict(load_stage1_state(args.sampler_from, cfg), strict=False)
        net.backbone.freeze()
        say(f"lvm-train: backbone and sampler from {args.sampler_from}; fresh heads")
    else:
        res = _stage1(args, cfg, net, seed, video_s, n_videos, continual_p, cache, out, world, rank, progress, say, t0)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return 0  # the heads stage (a single process) and the final checkpoint are rank 0's

    heads_last: dict = {}
    n_heads_videos = args.heads_videos or tc.heads_videos or n_videos
    if heads_steps > 0:
        from export.heads_stage import stage_videos, train_heads
        from export.train import init_activity_prior

        workers = args.workers or min(os.cpu_count() or 1, n_heads_videos)
        n_q = tc.heads_queries_per_video or args.queries or tc.queries_per_video
        specs = [(*training_video(seed, i), video_s, n_q) for i in range(n_heads_videos)]
        t1 = time.time()
        hv = stage_videos(net, specs, workers=workers, cache=cache, progress=progress)
        say(f"lvm-train: heads stage: {n_heads_videos} videos streamed through the frozen sampler "
            f"({workers} processes, {time.time() - t1:.0f} s)")
        if args.sampler_from and tc.prior_init:
            init_activity_prior(net, hv)
        t1 = time.time()
        heads_last = train_heads(net, hv, out, steps=heads_steps, batch=tc.heads_batch, lr=tc.lr_heads,
                                 identity_weight=tc.identity_weight,
                                 token_activity_weight=tc.token_activity_weight, seed=seed, device=device,
                                 progress=progress)
        say(f"lvm-train: heads stage: {heads_steps} steps on {device} ({time.time() - t1:.0f} s)")

    final = out / f"{cfg.name}.safetensors"
    steps = res.steps if res else 0
    save_checkpoint(net, final, {"seed": seed, "steps": steps, "continual_p": continual_p,
                                 "videos": n_videos, "video_s": video_s, "world_size": world,
                                 "heads_steps": heads_steps, "heads_videos": n_heads_videos if heads_steps else 0,
                                 "command": " ".join(["lvm-train"] + sys.argv[1:])})
    summary = {"checkpoint": str(final), "steps": steps, "train_seconds": round(res.seconds, 1) if res else 0.0,
               "heads_steps": heads_steps, "total_seconds": round(time.time() - t0, 1),
               "last_losses": res.last_losses if res else {}, "heads_last_losses": heads_last}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"lvm-train: done: {steps} stage-1 steps, {heads_steps} heads-stage steps in {time.time() - t0:.0f} s; "
        f"wrote {final}")
    return 0


def _stage1(args, cfg, net, seed, video_s, n_videos, continual_p, cache, out, world, rank, progress, say, t0):
    """Backbone (pre-trained or taken), then sampler + heads trained together on the streams."""
    import torch.distributed as dist

    from edge_runtime.checkout import training_video
    from export.checkpoint import load_checkpoint
    from export.data import attach_queries, backbone_digest, encode_video, render_video
    from export.pretrain import pretrain_backbone
    from export.train import train_lvm

    tc, fps = cfg.train, cfg.stream.fps
    videos = []
    for i in range(n_videos):
        vseed, look = training_video(seed, i)
        videos.append(render_video(vseed, video_s, cfg.backbone.image_size, fps, look=look, progress=progress))
    say(f"lvm-train: rendered {n_videos} videos x {video_s:g} s at {fps:g} fps ({time.time() - t0:.0f} s)")

    backbone_file = out / "backbone.safetensors"
    if args.backbone_from:
        from export.checkpoint import CheckpointError, read_metadata
        try:
            read_metadata(args.backbone_from)
            is_checkpoint = True
        except CheckpointError:
            is_checkpoint = False  # a bare backbone file (OUT/backbone.safetensors of another run)
        if is_checkpoint:
            # only the backbone is taken, so a checkpoint whose sampler or heads differ still serves
            from export.checkpoint import load_backbone_state
            net.backbone.load_state_dict(load_backbone_state(args.backbone_from, cfg))
        else:
            try:
                net.backbone.load_weights(args.backbone_from)
            except Exception as err:
                raise UsageError(f"{args.backbone_from}: not a checkpoint or backbone weights for "
                                 f"{cfg.backbone.name} ({str(err).splitlines()[0][:100]})") from None
        net.backbone.freeze()
    elif args.resume and (out / "checkpoint.safetensors").exists():
        pass  # restored with the rest of the model by train_lvm
    elif args.backbone_epochs > 0:
        if rank == 0:
            stats = pretrain_backbone(net.backbone, videos, epochs=args.backbone_epochs, seed=seed,
                                      max_frames=args.backbone_frames, progress=progress)
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in net.backbone.net.state_dict().items()}, str(backbone_file))
            say(f"lvm-train: backbone pre-trained on {int(stats['frames'])} frames/crops ({time.time() - t0:.0f} s)")
        if world > 1:
            dist.barrier()
            if rank != 0:
                net.backbone.load_weights(backbone_file)
        net.backbone.freeze()
    if args.resume and (out / "checkpoint.safetensors").exists():
        loaded, _ = load_checkpoint(out / "checkpoint.safetensors", cfg)
        net.load_state_dict(loaded.state_dict())
    bb_sha = backbone_digest(net.backbone)
    for i, v in enumerate(videos):
        encode_video(net.backbone, v, cache=cache, backbone_sha=bb_sha)
        attach_queries(v, args.queries or tc.queries_per_video, training_video(seed, i)[0])
    say(f"lvm-train: backbone tokens ready ({time.time() - t0:.0f} s; cache: {cache or 'off'})")

    return train_lvm(net, videos, out, epochs=args.epochs or tc.epochs, continual_p=continual_p, seed=seed,
                     max_steps=args.max_steps, progress=progress, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
