"""lvm-train's stage 1: the backbone (pre-trained or taken), the s5 sampler's LSMCL pre-training, then the
sampler and heads trained together on the streams (export/train/joint_stage.py); with the LSMCL step count
the checkpoint records and the dataset videos' query seeds, which the heads stage shares."""
from __future__ import annotations

import time

from tqdm import tqdm

from export.cli.common import UsageError


def stage1(args, cfg, net, seed, video_s, n_videos, continual_p, cache, out, world, rank, progress, say, t0,
           items=None, labels=None):
    """Backbone (pre-trained or taken), then sampler + heads trained together on the streams."""
    import torch.distributed as dist

    from edge_runtime.checkout import training_video
    from export.dataset.video_data import (
        attach_queries,
        backbone_digest,
        encode_video,
        load_dataset_video,
        render_video,
    )
    from export.model.checkpoint import load_checkpoint
    from export.train.joint_stage import train_lvm
    from export.train.pretrain import pretrain_backbone

    tc, fps, size = cfg.train, cfg.stream.fps, cfg.backbone.image_size
    videos = []
    if items is not None:
        for it in tqdm(items, desc="decode train videos", disable=not progress, leave=False):
            v = load_dataset_video(it, size, fps, progress=progress)
            if len(v.times) < 2 * cfg.stream.clip_frames:
                raise UsageError(f"{it.video}: {len(v.times)} frames at {fps:g} fps, fewer than two clips "
                                 f"({2 * cfg.stream.clip_frames}): too short to train on")
            videos.append(v)
        say(f"lvm-train: decoded {n_videos} train videos of {args.data} at {fps:g} fps ({time.time() - t0:.0f} s)")
    else:
        for i in range(n_videos):
            vseed, look = training_video(seed, i)
            videos.append(render_video(vseed, video_s, size, fps, look=look, progress=progress))
        say(f"lvm-train: rendered {n_videos} videos x {video_s:g} s at {fps:g} fps ({time.time() - t0:.0f} s)")

    backbone_file = out / "backbone.safetensors"
    if args.backbone_from:
        from export.model.checkpoint import CheckpointError, read_metadata
        try:
            read_metadata(args.backbone_from)
            is_checkpoint = True
        except CheckpointError:
            is_checkpoint = False  # a bare backbone file (OUT/backbone.safetensors of another run)
        if is_checkpoint:
            # only the backbone is taken, so a checkpoint whose sampler or heads differ still serves
            from export.model.checkpoint import load_backbone_state
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
    elif args.init_from or args.heads_from:
        net.backbone.freeze()  # the checkpoint's, loaded with the rest of the model
    elif args.backbone_epochs > 0:
        if rank == 0:
            stats = pretrain_backbone(net.backbone, videos, epochs=args.backbone_epochs, seed=seed,
                                      max_frames=args.backbone_frames, progress=progress, labels=labels,
                                      patch_classes=args.backbone_patch_classes,
                                      patch_activities=args.backbone_patch_activities)
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in net.backbone.net.state_dict().items()}, str(backbone_file))
            say(f"lvm-train: backbone pre-trained on {int(stats['frames'])} frames/crops ({time.time() - t0:.0f} s)")
        acts = f", patch activities {args.backbone_patch_activities:g}" if args.backbone_patch_activities else ""
        net.backbone.init_source = (f"{net.backbone.init_source} + lvm-train pre-training"
                                  f" (patch classes {args.backbone_patch_classes:g}{acts})")
        if world > 1:
            dist.barrier()
            if rank != 0:
                net.backbone.load_weights(backbone_file)
        net.backbone.freeze()
    if args.resume and (out / "checkpoint.safetensors").exists():
        loaded, loaded_meta = load_checkpoint(out / "checkpoint.safetensors", cfg)
        net.load_state_dict(loaded.state_dict())
        # the run's backbone (pre-trained, or taken): its origin goes on into the final checkpoint
        net.backbone.init_source = loaded_meta.get("backbone_init", net.backbone.init_source)
    bb_sha = backbone_digest(net.backbone)
    for i, v in enumerate(tqdm(videos, desc="backbone tokens", disable=not progress, leave=False)):
        encode_video(net.backbone, v, cache=cache, backbone_sha=bb_sha)
        qseed = query_seed(seed, i) if items is not None else training_video(seed, i)[0]
        attach_queries(v, args.queries or tc.queries_per_video, qseed)
    say(f"lvm-train: backbone tokens ready ({time.time() - t0:.0f} s; cache: {cache or 'off'})")

    resumed = args.resume and (out / "checkpoint.safetensors").exists()
    n_lsmcl = lsmcl_steps(args, cfg)
    if n_lsmcl > 0 and not resumed:
        from export.train.lsmcl import pretrain_lsmcl
        # every rank runs the same seeded steps on the same videos, so the ranks agree without a broadcast
        res = pretrain_lsmcl(net.sampler.encoder, videos, out, steps=n_lsmcl, batch=tc.lsmcl_batch,
                             clip_frames=cfg.stream.clip_frames, long_clips=tc.lsmcl_long_clips, mask=tc.lsmcl_mask,
                             temperature=tc.lsmcl_temperature, momentum=tc.lsmcl_momentum, lr=tc.lr_sampler,
                             seed=seed, progress=progress)
        say(f"lvm-train: LSMCL pre-training of the S4 encoder: {res['steps']} steps in {res['seconds']:.0f} s "
            f"(last loss {res['last'].get('loss')}, top-1 {res['last'].get('top1')})")
    return train_lvm(net, videos, out, epochs=args.epochs or tc.epochs, continual_p=continual_p, seed=seed,
                     max_steps=args.max_steps, progress=progress, resume=args.resume, labels=labels,
                     freeze_heads=bool(args.heads_from), say=say)


def lsmcl_steps(args, cfg) -> int:
    """LSMCL pre-training steps this run takes (s5 samplers only; --no-lsmcl and --lsmcl-steps)."""
    if cfg.sampler.kind != "s5" or args.no_lsmcl:
        return 0
    return cfg.train.lsmcl_steps if args.lsmcl_steps is None else args.lsmcl_steps


def query_seed(seed: int, i: int) -> int:
    """Seed of the queries of dataset train video ``i`` (the same in both stages)."""
    return seed * 1009 + i
