"""LVM-Net training (stage 1: sampler and heads together) on the procedural checkout benchmark.

Streaming formulation of the paper's recipe: every training video is a stream; each step feeds the
next clip of T frames of a set of *distinct* videos through the sampler (relaxed Gumbel top-m,
temperature annealed 1.5 -> 1), then answers one query per video whose window lies in the past of
its stream, plus the p previous queries of that video (the online continual-learning loss), from
the new memory. Memories are detached between steps and reset every epoch. Under torchrun (gloo)
the videos of a step are split across ranks — never one video on two ranks — and the written
memories are all-gathered so every rank holds the whole memory bank.
"""
from __future__ import annotations

import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from edge_runtime.atomic_write import atomic_write_bytes, atomic_writer
from edge_runtime.config import ModelConfig
from export.model.checkpoint import save_checkpoint
from export.dataset.video_data import VideoData
from export.train.eta import StepETA
from export.train.losses import QUERY_TARGETS, query_loss_terms, token_loss
from export.model.lvmnet import LVMNet
from export.train.query_batch import build_query_batch
from export.train.streaming import clip_step, new_svd
from export.model.svd_torch import TorchOnlineSVD
from export.train.token_targets import event_token_targets


# ---------------------------------------------------------------------------------------------
# batching: never two queries (memory writes) of one video in a step, on one rank or across ranks
# ---------------------------------------------------------------------------------------------
class VideoBatchSampler:
    """Yields, per step, the videos this rank writes. Each step's videos are distinct, and the
    ranks' shares are disjoint; the split is reshuffled every epoch with a seed all ranks share."""

    def __init__(self, n_videos: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        self.n, self.batch, self.rank, self.world, self.seed = n_videos, batch_size, rank, world, seed

    def epoch_groups(self, epoch: int) -> list[list[int]]:
        """Groups of distinct videos that go through the stream together; global (all ranks)."""
        order = list(range(self.n))
        random.Random(self.seed * 1009 + epoch).shuffle(order)
        size = self.batch * self.world
        return [order[i : i + size] for i in range(0, self.n, size)]

    def local(self, group: list[int]) -> list[int]:
        return group[self.rank :: self.world]


# ---------------------------------------------------------------------------------------------
@dataclass
class StreamState:
    mem: tuple[torch.Tensor, ...]
    svd: TorchOnlineSVD
    past: deque = field(default_factory=deque)


class TrainStep(nn.Module):
    """sampler write + heads on current and past queries -> loss terms (one module for DDP)."""

    def __init__(self, net: LVMNet) -> None:
        super().__init__()
        self.sampler, self.heads = net.sampler, net.heads
        self.cfg = net.cfg

    def forward(self, mem, clip, clip_t, clip_p, qb, q_video, svd_basis, svd_sv, token_target=None,
                generator=None):
        new, scores = self.sampler.forward_train(*mem, clip, clip_t, clip_p, generator=generator)
        tc = self.cfg.train
        terms = {}
        if token_target is not None:
            terms["sampler"] = tc.sampler_target_weight * token_loss(scores, *token_target)
        if qb is None:  # no query lies in the past of these streams yet: only the sampler learns
            return new, terms
        per_q = compact_memory([t[q_video] for t in new[:4]], qb.inputs["q_window"], self.heads.window_tol)
        out = self.heads(*per_q, svd_basis[q_video], svd_sv[q_video], **qb.inputs)
        terms |= query_loss_terms(out, {k: getattr(qb, k) for k in QUERY_TARGETS}, tc)
        return new, terms


def token_labels(labels: torch.Tensor, video: torch.Tensor, times: torch.Tensor, patches: torch.Tensor,
                 fps: float) -> torch.Tensor:
    """labels (V, N, P) per-frame-token maps of V videos (export/train/token_targets.py); video (Q,) each
    row's video; times/patches (Q, m) memory token coordinates -> (Q, m) each memory token's label.
    A memory token is looked up by the frame of its time and its patch."""
    frame = (times * fps).round().long().clamp(0, labels.shape[1] - 1)
    return labels[video[:, None], frame, patches]


def compact_memory(mem: list[torch.Tensor], window: torch.Tensor, tol: float) -> list[torch.Tensor]:
    """Per-query memory cut down to the tokens the heads can see (valid and inside the window).

    The heads mask every other memory token as a key in every layer, so dropping them is exact;
    it only saves the compute of attending over tokens whose outputs are never read."""
    tokens, times, patches, valid = mem
    keep = valid * ((times >= window[:, :1] - tol) & (times <= window[:, 1:] + tol)).float()
    n = max(int(keep.sum(1).max()), 1)
    order = torch.argsort(keep, dim=1, descending=True, stable=True)[:, :n]
    return [torch.gather(tokens, 1, order[..., None].expand(-1, -1, tokens.shape[-1])),
            torch.gather(times, 1, order), torch.gather(patches, 1, order), torch.gather(keep, 1, order)]


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _gather_memory(local_ids: list[int], new_mem: tuple[torch.Tensor, ...], world: int):
    """All-gather each rank's written memories -> list of (video id, memory tuple) for all ranks."""
    if world == 1:
        return [(v, tuple(t[i] for t in new_mem)) for i, v in enumerate(local_ids)]
    n_local = torch.tensor([len(local_ids)])
    sizes = [torch.zeros_like(n_local) for _ in range(world)]
    dist.all_gather(sizes, n_local)
    cap = int(max(s.item() for s in sizes))
    ids = torch.full((cap,), -1, dtype=torch.int64)
    ids[: len(local_ids)] = torch.tensor(local_ids, dtype=torch.int64)
    out = []
    gathered_ids = [torch.zeros_like(ids) for _ in range(world)]
    dist.all_gather(gathered_ids, ids)
    parts = []
    for t in new_mem:
        pad = torch.zeros((cap,) + tuple(t.shape[1:]), dtype=t.dtype)
        pad[: t.shape[0]] = t
        g = [torch.zeros_like(pad) for _ in range(world)]
        dist.all_gather(g, pad)
        parts.append(g)
    for r in range(world):
        for j, v in enumerate(gathered_ids[r].tolist()):
            if v >= 0:
                out.append((v, tuple(p[r][j] for p in parts)))
    return out


@dataclass
class TrainResult:
    steps: int
    seconds: float
    last_losses: dict[str, float]


def train_lvm(net: LVMNet, videos: list[VideoData], out_dir: Path, *, epochs: int, continual_p: int,
              seed: int = 0, max_steps: int | None = None, progress: bool = True, resume: bool = False,
              log_every: int = 1, labels: dict | None = None, freeze_heads: bool = False,
              say=None) -> TrainResult:
    """``labels``: the class names the per-epoch checkpoints carry (export.model.checkpoint.save_checkpoint).
    ``freeze_heads``: train the sampler alone, through heads taken from another checkpoint (their
    query losses still reach the sampler through the kept tokens). ``say``: where the measured ETA goes
    (rank 0 only)."""
    cfg: ModelConfig = net.cfg
    tc = cfg.train
    rank = dist.get_rank() if _is_dist() else 0
    world = dist.get_world_size() if _is_dist() else 1
    torch.manual_seed(seed + 17 * rank)
    gen = torch.Generator().manual_seed(seed * 31 + rank)
    rng = np.random.default_rng(seed * 7 + rank)
    out_dir.mkdir(parents=True, exist_ok=True)

    step_mod = TrainStep(net)
    # find_unused_parameters: a rank whose batch has no query of some type leaves parameters
    # without gradients; without it that rank skips their bucket and the other rank waits forever.
    model = nn.parallel.DistributedDataParallel(step_mod, find_unused_parameters=True) if world > 1 else step_mod
    groups = [{"params": list(net.sampler.parameters()), "lr": tc.lr_sampler, "name": "sampler"}]
    if freeze_heads:
        net.heads.requires_grad_(False)
    else:
        groups.append({"params": list(net.heads.parameters()), "lr": tc.lr_other, "name": "heads"})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)

    T = cfg.stream.clip_frames
    n_clips = min(len(v.times) // T for v in videos)
    sampler_batches = VideoBatchSampler(len(videos), tc.batch_size, rank, world, seed)
    groups_per_epoch = len(sampler_batches.epoch_groups(0))
    total_steps = epochs * groups_per_epoch * n_clips
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    start_epoch, step = 0, 0
    state_path = out_dir / "train_state.json"
    if resume and state_path.exists():
        start_epoch, step = _load_train_state(out_dir, net, opt)
    elif tc.prior_init and not freeze_heads:
        init_activity_prior(net, videos)
    base_lrs = [tc.lr_sampler, tc.lr_other][: len(groups)]
    targets = ([torch.from_numpy(event_token_targets(v.annotations, v.times, cfg.backbone.grid)) for v in videos]
               if tc.sampler_target_weight > 0 else None)
    log = open(out_dir / "train_log.jsonl", "a") if rank == 0 else None
    eta = StepETA("lvm-train: stage 1", total_steps - step, say if rank == 0 else None)
    t0 = time.time()
    last: dict[str, float] = {}
    net.train()
    if freeze_heads:
        net.heads.eval()  # no dropout in heads that do not learn
    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        # memory reset every epoch (LVM-Net A.4)
        streams = {i: StreamState(mem=net.empty_carry(1), svd=new_svd(net), past=deque(maxlen=max(continual_p, 1)))
                   for i in range(len(videos))}
        bar = tqdm(total=groups_per_epoch * n_clips, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress or rank != 0, leave=False)
        for group in sampler_batches.epoch_groups(epoch):
            local = sampler_batches.local(group)
            for c in range(n_clips):
                if step >= total_steps:
                    break
                net.sampler.set_temperature(step / max(total_steps - 1, 1), cfg.sampler.tau_start, cfg.sampler.tau_end)
                warm = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps else 1.0
                for g, lr in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr * warm
                batch = _prepare(net, videos, streams, local, c, continual_p, rng, targets)
                # every rank must take the same path (DDP): learn only once all ranks have queries
                # (or, with the sampler's token loss, always: then a rank without queries sends zeros)
                ready = torch.tensor([1 if batch["qb"] is not None or targets else 0])
                if world > 1:
                    dist.all_reduce(ready, op=dist.ReduceOp.MIN)
                if not int(ready):
                    with torch.no_grad():
                        new_mem = net.sampler(*batch["mem"], batch["clip"], batch["clip_t"], batch["clip_p"])
                    _commit(streams, local, new_mem, world)
                    step += 1
                    eta.step(timed=False)  # a memory write only: not what the remaining steps cost
                    bar.update(1)
                    continue
                new_mem, terms = model(batch["mem"], batch["clip"], batch["clip_t"], batch["clip_p"], batch["qb"],
                                       batch["q_video"], batch["svd_basis"], batch["svd_sv"],
                                       token_target=batch["token_target"], generator=gen)
                loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(step_mod.parameters(), 1.0)
                opt.step()
                _commit(streams, local, new_mem, world)
                step += 1
                # a step with no query in its streams' past learns only the sampler's token loss: cheaper
                # than the query steps that make up most of the rest, so it does not set the rate
                eta.step(timed=batch["qb"] is not None)
                last = {k: float(v.detach()) for k, v in terms.items()} | {"loss": float(loss.detach()), "tau": net.sampler.tau}
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tau=f"{net.sampler.tau:.2f}")
                if log and step % log_every == 0:
                    log.write(json.dumps({"step": step, "epoch": epoch, **last, "time_s": round(time.time() - t0, 1)}) + "\n")
                    log.flush()
        bar.close()
        if rank == 0:
            save_checkpoint(net, out_dir / "checkpoint.safetensors", {"epoch": epoch + 1, "step": step}, labels=labels)
            _save_train_state(out_dir, opt, epoch + 1, step)
        if _is_dist():
            dist.barrier()
    if log:
        log.close()
    return TrainResult(steps=step, seconds=time.time() - t0, last_losses=last)


@torch.no_grad()
def init_activity_prior(net: LVMNet, videos: list[VideoData]) -> torch.Tensor:
    """Activity bias = log-odds of each activity among the training activity queries' answers, so
    the heads start from the class prior instead of spending their first hundreds of steps on it."""
    C = net.cfg.heads.num_activities
    hits, n = torch.zeros(C, dtype=torch.float64), 0
    for v in videos:
        for q in v.queries:
            if q.type == "activity":
                hits[list(q.gt_activities)] += 1
                n += 1
    if n == 0:
        return net.heads.activity_mlp.bias
    p = ((hits + 0.5) / (n + 1.0)).clamp(1e-3, 1 - 1e-3)
    net.heads.activity_mlp.bias.copy_(torch.log(p / (1 - p)).float())
    return net.heads.activity_mlp.bias


def _commit(streams, local, new_mem, world) -> None:
    """Memory is a buffer, not a parameter: detach, then share every write with all ranks."""
    detached = tuple(t.detach() for t in new_mem)
    for v, mem in _gather_memory(local, detached, world):
        streams[v].mem = tuple(t[None] for t in mem)


def _token_target(tgt: torch.Tensor, mem: tuple[torch.Tensor, ...], clip_rows: slice, fps: float):
    """Event-token targets of one video's candidates (memory first, then the clip) and their weights
    (0 for empty memory slots). Memory tokens are looked up by their frame time and patch."""
    _, mem_t, mem_p, mem_valid = mem[:4]
    t_mem = token_labels(tgt[None], torch.zeros(1, dtype=torch.int64), mem_t, mem_p, fps)[0] * mem_valid[0]
    t_clip = tgt[clip_rows].reshape(-1)
    return torch.cat([t_mem, t_clip]), torch.cat([mem_valid[0], torch.ones_like(t_clip)])


def _prepare(net, videos, streams, local, c, continual_p, rng, targets=None) -> dict:
    cfg = net.cfg
    T = cfg.stream.clip_frames
    mems, clips, cts, cps, queries, crops, q_video, bases, svs = [], [], [], [], [], [], [], [], []
    tts, tws = [], []
    for j, v in enumerate(local):
        data, st = videos[v], streams[v]
        if targets is not None:
            tt, tw = _token_target(targets[v], st.mem, slice(c * T, (c + 1) * T), cfg.stream.fps)
            tts.append(tt)
            tws.append(tw)
        clip, ct, cp = clip_step(net, data, c, st.svd)
        clips.append(clip)
        cts.append(ct)
        cps.append(cp)
        mems.append(st.mem)
        basis, sv = st.svd.padded()
        bases.append(basis[None])
        svs.append(sv[None])
        now = float(data.times[(c + 1) * T - 1]) + 1.0 / cfg.stream.fps  # the clip covers up to here
        past_ok = [q for q in data.queries if q.end <= now + 1e-6]
        if past_ok:
            q = past_ok[int(rng.integers(len(past_ok)))]
            for pq in [q] + (list(st.past)[-continual_p:] if continual_p > 0 else []):
                queries.append(pq)
                crops.append(data.crop_tokens)
                q_video.append(j)
            st.past.append(q)
    mem = tuple(torch.cat([m[i] for m in mems]) for i in range(len(mems[0])))
    clip, clip_t, clip_p = torch.cat(clips), torch.cat(cts), torch.cat(cps)
    svd_basis, svd_sv = torch.cat(bases), torch.cat(svs)
    qb = build_query_batch(queries, crops, cfg) if queries else None
    token_target = (torch.stack(tts), torch.stack(tws)) if targets is not None else None
    return {"mem": mem, "clip": clip, "clip_t": clip_t, "clip_p": clip_p, "qb": qb,
            "q_video": torch.tensor(q_video, dtype=torch.int64), "svd_basis": svd_basis, "svd_sv": svd_sv,
            "token_target": token_target}


# ---------------------------------------------------------------------------------------------
# resumable optimizer state (safetensors + JSON, never pickle)
# ---------------------------------------------------------------------------------------------
def _save_train_state(out_dir: Path, opt: torch.optim.Optimizer, epoch: int, step: int) -> None:
    from safetensors.torch import save_file

    tensors, scalars = {}, {}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"{i}.{k}"] = v.contiguous()
            else:
                scalars[f"{i}.{k}"] = float(v)
    with atomic_writer(out_dir / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {"epoch": epoch, "step": step, "scalars": scalars,
            "lrs": [g["lr"] for g in opt.param_groups]}
    atomic_write_bytes(out_dir / "train_state.json", json.dumps(meta).encode())


def _load_train_state(out_dir: Path, net: LVMNet, opt: torch.optim.Optimizer) -> tuple[int, int]:
    from safetensors.torch import load_file

    from export.model.checkpoint import load_checkpoint

    loaded, _ = load_checkpoint(out_dir / "checkpoint.safetensors", net.cfg)
    net.load_state_dict(loaded.state_dict())
    meta = json.loads((out_dir / "train_state.json").read_text())
    tensors = load_file(str(out_dir / "optimizer.safetensors"))
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
        for k, v in meta["scalars"].items():
            idx, name = k.split(".", 1)
            if idx == str(i):
                st[name] = torch.tensor(v)
        if st:
            opt.state[p] = st
    return int(meta["epoch"]), int(meta["step"])
