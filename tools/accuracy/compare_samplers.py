"""Which token selector should lvm-tiny ship? Every sampler side by side in one run.

    python -m tools.accuracy.compare_samplers --checkpoint lvm=checkpoints/lvm-tiny.safetensors \\
        --checkpoint s5=runs/s5/lvm-tiny-s5.safetensors --checkpoint s5-no-lsmcl=runs/s5-nolsmcl/lvm-tiny-s5.safetensors \\
        --json docs/accuracy/samplers.json

Per checkpoint (its own sampler) and per reference memory (random tokens, the query-aware oracle; with the
first checkpoint's heads), on the held-out videos of tools/accuracy/eval_samplers.py:
- R@1x (and @3x) per query type x window, the same scoring as lvm-eval;
- the memory-ceiling figures at the end of each stream (tools/accuracy/memory_ceiling.py): the share of memory
  tokens that show an event's object, the share of events with such a token;
- the sampler graph's latency on ONNX Runtime CPU (exported here from the checkpoint, FP32, one stream,
  all samplers' runs interleaved so machine drift hits all alike; median and p10-p90), with an s5
  sampler's S4 kernel both as the convolution and as the recurrence;
- bytes of state per stream (memory tokens + the sampler's own state) and training minutes (from
  summary.json / lsmcl_log.jsonl beside a checkpoint, when the run left them there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.compare_samplers", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="label=path, repeatable")
    ap.add_argument("--references", default="random,oracle", help="reference memories read by the first "
                    "checkpoint's heads: random, oracle (comma list; empty for none)")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--video-s", type=float, default=1800.0)
    ap.add_argument("--queries", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=40, help="timed sampler calls per graph (0: no latency)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--latency-only", action="store_true", help="only the interleaved sampler latency (no evaluation)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    if args.latency_only:
        from export.model.checkpoint import load_checkpoint

        nets = {}
        for spec in args.checkpoint:
            label, _, path = spec.rpartition("=")
            nets[label or Path(path).stem] = load_checkpoint(path)[0]
        lat = sampler_latency(nets, runs=args.runs, threads=args.threads)
        Path(args.json).write_text(json.dumps({"meta": {"runs": args.runs, "threads": args.threads}, "latency": lat},
                                              indent=2))
        for k, v in lat.items():
            print(f"{k:28s} {v['median_ms']:7.2f} ms ({v['p10_ms']:.2f}-{v['p90_ms']:.2f})  x{v['vs_first']:.2f}")
        return
    import numpy as np
    import torch
    from tools.accuracy.eval_samplers import prior_ranking

    from export.model.checkpoint import load_checkpoint
    from export.dataset.video_data import token_cache_dir
    from export.evaluate.scoring import evaluation_videos

    torch.set_num_threads(args.threads)
    nets, rows = {}, {}
    videos = prior = None
    for spec in args.checkpoint:
        label, _, path = spec.rpartition("=")
        label = label or Path(path).stem
        net, meta = load_checkpoint(path)
        if videos is None:
            bb = {k: v.clone() for k, v in net.backbone.state_dict().items()}
            videos = evaluation_videos(net, args.queries, args.seed, videos=args.videos, video_s=args.video_s,
                                       cache=token_cache_dir())
            prior = np.asarray(prior_ranking(net.cfg, meta, videos)["train_frequency"])
        elif not all(torch.equal(bb[k], v) for k, v in net.backbone.state_dict().items()):
            raise SystemExit(f"{path}: its backbone differs from the first checkpoint's; compare separately")
        nets[label] = net
        rows[label] = _evaluate(net, videos, "neural", prior, args.seed)
        rows[label].update(sampler=net.cfg.sampler.kind, checkpoint=path, training=_training(Path(path), meta),
                           state_bytes=_state_bytes(net))
    first = next(iter(nets.values()))
    for ref in filter(None, args.references.split(",")):
        rows[ref] = _evaluate(first, videos, ref, prior, args.seed, memory=ref == "random")
        rows[ref].update(sampler=ref, state_bytes=_state_bytes(first, with_sampler=False))
    latency = sampler_latency(nets, runs=args.runs, threads=args.threads) if args.runs > 0 else {}
    for label, net in nets.items() if latency else ():
        if net.sampler.has_state:
            mode = net.cfg.sampler.s4_mode
            rows[label]["sampler_latency"] = latency[f"{label} ({mode})"]
            rows[label]["sampler_latency_other_mode"] = next(v for k, v in latency.items()
                                                             if k.startswith(label + " (") and k != f"{label} ({mode})")
        else:
            rows[label]["sampler_latency"] = latency[label]
    info = {"videos": args.videos, "video_s": args.video_s, "queries_per_video": args.queries, "seed": args.seed,
            "looks": [v.video.look for v in videos], "threads": args.threads,
            "heads": "every row is read by the first checkpoint's heads unless its checkpoint has its own"}
    Path(args.json).write_text(json.dumps({"meta": info, "rows": rows}, indent=2))
    print(summary_table(rows))


def _evaluate(net, videos, sampler, prior, seed, memory: bool = True) -> dict:
    """R@kx of one memory read by ``net``'s heads; ``memory``: also what that memory keeps."""
    from tools.accuracy.memory_ceiling import memory_figures

    from export.cli.eval import format_table
    from export.evaluate.scoring import evaluate_model

    t0 = time.time()
    res = evaluate_model(net, videos, sampler, seed=seed, progress=False)
    res["eval_seconds"] = round(time.time() - t0, 1)
    if memory:
        res["memory"] = memory_figures(net, videos, sampler, prior, seed=seed)
    print(f"== {sampler} of {net.cfg.name} ({res['queries']} queries, {res['eval_seconds']} s)\n{format_table(res)}",
          flush=True)
    return res


def _state_bytes(net, with_sampler: bool = True) -> dict:
    """Per stream: the m-token memory (tokens, times, patches, valid flags, float32/int64 as the graph
    carries them) and the sampler's own recurrent state."""
    c = net.cfg
    m, d = c.stream.memory_tokens, c.backbone.dim
    memory = m * d * 4 + m * 4 + m * 8 + m * 4
    sampler = 0
    if with_sampler and net.sampler.has_state:
        sampler = math.prod(net.sampler.state_shape) * 4
    return {"memory": memory, "sampler_state": sampler, "total": memory + sampler}


def _training(ck: Path, meta: dict) -> dict:
    """Training time as the run logged it next to the checkpoint, if it did."""
    out = {"meta_steps": meta.get("steps"), "lsmcl_steps": meta.get("lsmcl_steps")}
    summary = ck.parent / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out["stage1_minutes"] = round(s.get("train_seconds", 0.0) / 60, 1)
        out["total_minutes"] = round(s.get("total_seconds", 0.0) / 60, 1)
    log = ck.parent / "lsmcl_log.jsonl"
    if log.is_file():
        last = json.loads(log.read_text().splitlines()[-1])
        out["lsmcl_minutes"] = round(last["time_s"] / 60, 1)
        out["lsmcl_last"] = {"loss": last["loss"], "top1": last["top1"]}
    return out


def sampler_latency(nets: dict, runs: int, threads: int) -> dict:
    """Each sampler graph exported (FP32, slimmed as lvm-export does) and timed on one stream's call, all
    graphs interleaved; an s5 sampler also in its other S4 mode (same weights)."""
    from export.onnx.cpu_latency import measure_latency
    from export.model.lvmnet import LVMNet
    from export.onnx.graphs import export_graph, sampler_spec, slim_and_check
    from export.onnx.parity import example_feeds

    paths, feeds, export_s = {}, {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="samplers-"))
    for label, net in nets.items():
        variants = {label: net}
        if net.sampler.has_state:
            mode = net.cfg.sampler.s4_mode
            other = "recurrent" if mode == "conv" else "conv"
            cfg = net.cfg.model_copy(update={"sampler": net.cfg.sampler.model_copy(update={"s4_mode": other})})
            twin = LVMNet(cfg, backbone_init=False).eval()
            twin.load_state_dict(net.state_dict())
            variants = {f"{label} ({mode})": net, f"{label} ({other})": twin}
        for name, n in variants.items():
            spec = sampler_spec(n)
            paths[name] = tmp / f"{len(paths)}.onnx"
            t0 = time.time()
            export_graph(n, spec, paths[name])
            slim_and_check(paths[name])
            export_s[name] = round(time.time() - t0, 1)
            feeds[name] = example_feeds(n, spec, streams=1)
    lat = measure_latency(paths, None, feeds_of=feeds, runs=runs, warmup=3, threads=threads)
    ref = lat[next(iter(lat))]["median_ms"]
    return {k: {**v, "vs_first": round(v["median_ms"] / ref, 3), "export_seconds": export_s[k]}
            for k, v in lat.items()}


def summary_table(rows: dict) -> str:
    cells = [(t, w) for t in ("activity", "object", "time") for w in ("short", "medium", "long")]
    head = "| memory | " + " | ".join(f"{t[:3]} {w[:3]}" for t, w in cells) + " | event tokens | events kept | " \
           "sampler ms (p10-p90) | state B |"
    lines = [head, "|" + "---|" * (len(cells) + 5)]
    for label, r in rows.items():
        if "recall@1x" not in r:
            continue
        rec = " | ".join(f"{100 * r['recall@1x'][t][w]:.1f}" for t, w in cells)
        mem = r.get("memory") or {}
        ev = f"{100 * mem['event_token_share']:.1f} | {100 * mem['events_covered']:.1f}" if mem else "- | -"
        lat = r.get("sampler_latency")
        lat_s = f"{lat['median_ms']:.1f} ({lat['p10_ms']:.1f}-{lat['p90_ms']:.1f})" if lat else "-"
        lines.append(f"| {label} | {rec} | {ev} | {lat_s} | {r['state_bytes']['total']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
