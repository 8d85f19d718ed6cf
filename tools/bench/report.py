"""Runs the selected parts of the benchmark and writes results.json, results.md and the plots; a run of
some parts (--only) keeps every other part already in the results."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path

from tools.bench.common import REPO, CpuMonitor, Ctx, cpu_count, loadavg, rss_bytes

SCHEMA = "lvm-edge-bench/1"
FOREIGN_WARN = 0.10

GOALS = [  # (figure key, the goal it must meet) — listed in results.md even when not run
    ("P1.activity_speedup", ">= 100"), ("P1.object_speedup", ">= 200"),
    ("P2.lvm-tiny.onnxruntime_rtf", ">= 30"), ("P2.lvm-edge.onnxruntime_rtf", ">= 5"),
    ("P3.p50_ms", "<= 10"), ("P3.p99_ms", "<= 50"), ("P3.latency_ratio_10h_vs_1min", "<= 1.2"),
    ("P4.rss_growth_pct", "<= 2"), ("P4.state_bytes", "== m*d*4"),
    ("P5.update_vs_recompute_speedup", ">= 20"),
    ("P6.backbone.int8_speedup", ">= 1.8"), ("P6.int8_accuracy_delta_points", "<= 1"),
    ("P7.backbone_fraction_of_peak", ">= 0.5"),
    ("P8.lvm-tiny.streams_realtime", ">= 64"), ("P8.lvm-edge.streams_realtime", ">= 16"),
    ("P8.lvm-tiny.query_p99_ms", "<= 50"), ("P8.lvm-edge.query_p99_ms", "<= 50"),
    ("P8.lvm-tiny.batched_vs_separate", ">= 1.5"), ("P8.rss_growth_pct", "<= 2"),
]


def _host() -> dict:
    from export.onnx.bundle_writer import host_info  # one reader of /proc/cpuinfo for bundles and benchmarks

    cpu = host_info()["cpu"] or None
    vers = {}
    for mod in ("numpy", "onnxruntime", "torch", "timm", "sklearn"):
        try:
            vers[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            vers[mod] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                    cwd=REPO).stdout.strip())
    except OSError:
        commit, dirty = None, None
    return {"cpu": cpu, "cores_usable": cpu_count(), "cores_total": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "versions": vers, "git_commit": commit, "git_dirty": dirty}


def run(args, parts: tuple[str, ...], p1_subset: dict, argv: list[str]) -> int:
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[bench {time.time() - t_start:6.1f}s] {msg}", flush=True)

    ctx = Ctx(quick=args.quick, threads=args.threads, out=out, checkpoint=args.checkpoint, log=log,
              bundle=getattr(args, "bundle", None))
    ctx.p1_subset = p1_subset
    ctx.p9_bundle = getattr(args, "p9_bundle", None)
    ctx.p9_models = [m.strip() for m in (getattr(args, "p9_models", None) or "").split(",") if m.strip()] or None
    la = loadavg()
    cores = cpu_count()
    log(f"{'QUICK (not a measurement)' if args.quick else 'FULL'} run, parts {','.join(parts)}, threads {args.threads}, "
        f"loadavg {la} on {cores} cores")
    if la and la[0] > 0.5 * cores:
        ctx.warn(f"machine already loaded before the run: loadavg {la[0]:.2f} on {cores} cores; timings will be "
                 "slower and noisier than on an idle machine")
    import numpy as np  # noqa: F401  (after the thread env vars)

    from tools.bench.answers import p9
    from tools.bench.memory import p3_p4
    from tools.bench.precision import p6, p7
    from tools.bench.speed import gpu, p1, p2
    from tools.bench.streams import p8
    from tools.bench.svd import p5

    runners = {"P1": p1, "P2": p2, "P5": p5, "P6": p6, "P7": p7, "P8": p8, "P9": p9, "GPU": gpu}
    errors: dict[str, str] = {}
    load: dict[str, dict] = {}
    todo = list(parts)
    if "P3" in todo or "P4" in todo:  # one accelerated stream serves both
        i = min(todo.index(x) for x in ("P3", "P4") if x in todo)
        todo = [x for x in todo if x not in ("P3", "P4")]
        todo.insert(i, "P3+P4")
    for part in todo:
        log(f"{part} ...")
        mon = CpuMonitor()
        try:
            if part == "P3+P4":
                d = p3_p4(ctx, set(parts))
                ctx.parts["P3_P4"] = d
            else:
                ctx.parts[part] = runners[part](ctx)
        except Exception as err:  # noqa: BLE001 - one part failing must not lose the others
            errors[part] = f"{type(err).__name__}: {err}"
            ctx.parts[part] = {"error": errors[part], "traceback": traceback.format_exc()}
            log(f"{part} FAILED: {errors[part]}")
        ld = mon.stop()
        ld["rss_bytes_after"] = rss_bytes()
        load[part] = ld
        fb = ld.get("foreign_busy_frac")
        if fb is not None and fb > FOREIGN_WARN:
            ctx.warn(f"{part}: other processes used {fb:.0%} of the machine's CPU time during the part "
                     f"(loadavg {ld['loadavg_start']} -> {ld['loadavg_end']}); its timings are not clean")
        log(f"{part} done in {ld['wall_s']:.1f} s (foreign CPU {fb if fb is not None else '?'})")

    res = {
        "schema": SCHEMA, "quick": bool(args.quick),
        "command": " ".join(["python -m tools.bench", *argv]),
        "parts_run": list(parts), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "duration_s": round(time.time() - t_start, 1), "threads": args.threads, "host": _host(),
        "load": {"loadavg_at_start": la, "cores": cores, "foreign_warn_threshold": FOREIGN_WARN, "per_part": load},
        "weights": ctx.weights_used(), "bundles": ctx.bundles_used(),
        "warnings": ctx.warnings, "notes": ctx.notes, "errors": errors,
        "figures": ctx.figures, "parts": ctx.parts,
    }
    if args.only:
        why = _keep_earlier(res, out, parts)
        if why:
            log(why)
        elif res.get("kept_from_earlier_runs"):
            kept = [p for r in res["kept_from_earlier_runs"] for p in r["parts"]]
            log(f"kept from earlier runs: parts {', '.join(kept)}")
    if args.quick:
        res["notes"].insert(0, "QUICK run: tiny sizes (2-min video, 50 queries, 2-min accelerated stream, "
                               "16-clip SVD window); checks the code paths, its numbers are not the benchmark")
    (out / "results.json").write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    (out / "results.md").write_text(markdown(res))
    if not args.no_plots:
        try:
            from tools.bench.plots import plots

            res["plots"] = plots(res, out)
        except Exception as err:  # noqa: BLE001
            ctx.warn(f"plots failed: {type(err).__name__}: {err}")
            res["plots"] = []
        (out / "results.json").write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
        (out / "results.md").write_text(markdown(res))
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} ({res['duration_s']:.0f} s)")
    missed = [k for k, f in ctx.figures.items() if f.get("met") is False]
    if errors:
        log(f"parts that failed: {', '.join(errors)}")
        return 1
    if args.strict and not args.quick and missed:
        log(f"goals not met: {', '.join(missed)}")
        return 1
    return 0


def _part_of_key(key: str) -> set[str]:
    """The benchmark parts a key of figures / parts / load belongs to ("P3_P4" and "P3+P4" hold two)."""
    head = key.split(".")[0]
    return set(head.replace("+", "_").split("_")) if head in ("P3_P4", "P3+P4") else {head}


def _held_parts(old: dict) -> set[str]:
    held = {p for k in old.get("figures", {}) for p in _part_of_key(k)}
    for k, v in old.get("parts", {}).items():
        if k == "P3_P4" and isinstance(v, dict):
            held |= {p.upper() for p in ("p3", "p4") if p in v}
        else:
            held |= _part_of_key(k)
    return held | {p for k in old.get("load", {}).get("per_part", {}) for p in _part_of_key(k)}


def _run_record(run: dict, parts: list[str]) -> dict:
    return {"parts": parts, "command": run.get("command"), "started_utc": run.get("started_utc"),
            "duration_s": run.get("duration_s"), "git_commit": (run.get("host") or {}).get("git_commit",
                                                                                          run.get("git_commit")),
            "loadavg_at_start": (run.get("load") or {}).get("loadavg_at_start", run.get("loadavg_at_start")),
            "warnings": run.get("warnings", []), "notes": run.get("notes", []),
            "errors": {k: v for k, v in (run.get("errors") or {}).items() if _part_of_key(k) & set(parts)}}


def _keep_earlier(res: dict, out: Path, parts: tuple[str, ...]) -> str | None:
    """A run of some parts (--only) into a folder holding earlier results (same schema, same --quick)
    keeps every part it holds that is not run now — those of the last run and those that run had
    itself kept — so re-measuring one part never erases the others. Each kept part is listed under
    the run that measured it. Returns why nothing was kept, or None."""
    path = out / "results.json"
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no earlier {path}: only parts {','.join(parts)} are in the results"
    except (OSError, ValueError) as err:
        return f"earlier {path} unreadable ({type(err).__name__}: {err}); it is replaced"
    if old.get("schema") != SCHEMA or bool(old.get("quick")) != bool(res["quick"]):
        return (f"earlier {path} is from another schema or {'a full' if res['quick'] else 'a --quick'} run; "
                "it is replaced, not merged")
    now = set(parts)
    kept = _held_parts(old) - now
    if not kept:
        return None
    res["figures"] = {**{k: v for k, v in old.get("figures", {}).items() if not _part_of_key(k) & now},
                      **res["figures"]}
    res["parts"] = {**{k: v for k, v in old.get("parts", {}).items() if not _part_of_key(k) & now}, **res["parts"]}
    both, new = old.get("parts", {}).get("P3_P4"), res["parts"].get("P3_P4")
    if isinstance(both, dict) and isinstance(new, dict):
        # P3 and P4 share one stream and one detail dict: a run of one of them keeps the other's sub-dict
        for sub in ("p3", "p4"):
            if sub.upper() in kept and sub in both:
                new.setdefault(sub, both[sub])
    res["load"]["per_part"] = {**{k: v for k, v in old.get("load", {}).get("per_part", {}).items()
                                  if not _part_of_key(k) & now}, **res["load"]["per_part"]}
    res["weights"] = {**old.get("weights", {}), **res["weights"]}
    res["bundles"] = {**old.get("bundles", {}), **res["bundles"]}
    records, placed = [], set()
    earlier = [(r, r.get("parts", [])) for r in old.get("kept_from_earlier_runs", [])]
    for run_, claimed in [(old, old.get("parts_run", []))] + earlier:
        mine = sorted(set(claimed) & kept - placed)
        if mine:
            records.append(_run_record(run_, mine))
            placed |= set(mine)
    if kept - placed:  # results written before provenance was recorded
        records.append({"parts": sorted(kept - placed), "command": None, "started_utc": None, "duration_s": None,
                        "git_commit": None, "loadavg_at_start": None, "warnings": [], "errors": {},
                        "notes": ["the run that measured these parts was not recorded"]})
    res["kept_from_earlier_runs"] = records
    return None


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        a = abs(v)
        if a >= 1e6:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01 or a == 0:
            return f"{v:.3g}"
        return f"{v:.2e}"
    return str(v)


def markdown(res: dict) -> str:
    f = res["figures"]
    L = []
    title = "lvm-edge benchmark results" + (" — QUICK RUN (smoke test, not a measurement)" if res["quick"] else "")
    L.append(f"# {title}\n")
    h = res["host"]
    L.append(f"`{res['command']}` — {res['started_utc']}, {res['duration_s']:.0f} s, {res['threads']} threads, "
             f"{h.get('cpu')} ({h.get('cores_usable')} usable cores), git {str(h.get('git_commit'))[:10]}"
             f"{' (dirty tree)' if h.get('git_dirty') else ''}.\n")
    L.append(f"Load average at start: {res['load']['loadavg_at_start']} on {res['load']['cores']} cores.\n")
    for k in res.get("kept_from_earlier_runs", []):
        if k["command"] is None:
            L.append(f"Parts {', '.join(k['parts'])} are kept from an earlier run that was not recorded.\n")
            continue
        L.append(f"Parts {', '.join(k['parts'])} are kept from an earlier run: `{k['command']}` — {k['started_utc']}, "
                 f"{k['duration_s'] or 0:.0f} s, git {str(k['git_commit'])[:10]}, load average at start "
                 f"{k['loadavg_at_start']}" + "".join(f"; its warning: {w}" for w in k["warnings"])
                 + "".join(f"; {p} failed: {e}" for p, e in k.get("errors", {}).items()) + ".\n")
    for name, w in res.get("weights", {}).items():
        L.append(f"- weights {name}: {w.get('weights')} ({w.get('path')}{', ' + w['why'] if w.get('why') else ''})")
    L.append("")
    if res["warnings"] or res["notes"] or res["errors"]:
        for w in res["notes"]:
            L.append(f"> note: {w}")
        for w in res["warnings"]:
            L.append(f"> **warning:** {w}")
        for k, e in res["errors"].items():
            L.append(f"> **{k} failed:** {e}")
        L.append("")
    L.append("## Goals\n")
    L.append("| figure | value | p10 – p90 (min – max) | goal | met |")
    L.append("|---|---|---|---|---|")
    for key, goal in GOALS:
        x = f.get(key)
        if x is None:
            L.append(f"| {key} | not run | | {goal} | |")
            continue
        L.append(f"| {key} | {_fmt(x.get('value'))} {x.get('unit', '')} | {_spread(x)} | {x.get('goal', goal)} | "
                 f"{_met(x, res['quick'])} |")
    L.append("\n## All figures\n")
    L.append("| figure | value | p10 – p90 (min – max) | n | goal | met | note |")
    L.append("|---|---|---|---|---|---|---|")
    for key, x in f.items():
        note = str(x.get("note", "")).replace("|", "/")
        L.append(f"| {key} | {_fmt(x.get('value'))} {x.get('unit', '')} | {_spread(x)} | {x.get('n', '')} | "
                 f"{x.get('goal', '')} | {_met(x, res['quick']) if 'goal' in x else ''} | {note} |")
    L.append("\n## CPU load per part\n")
    L.append("| part | wall s | foreign CPU (share of machine) | own CPU | loadavg start → end |")
    L.append("|---|---|---|---|---|")
    for part, ld in res["load"]["per_part"].items():
        L.append(f"| {part} | {ld.get('wall_s')} | {_pct(ld.get('foreign_busy_frac'))} | {_pct(ld.get('own_busy_frac'))} "
                 f"| {ld.get('loadavg_start')} → {ld.get('loadavg_end')} |")
    L.append("\n## Method\n")
    for part, d in res["parts"].items():
        if not isinstance(d, dict):
            continue
        for k in ("our_path", "baseline", "extrapolation", "what", "how", "rows"):
            if k in d:
                L.append(f"- **{part} {k.replace('_', ' ')}:** {d[k]}")
        for sub in ("p3",):
            if isinstance(d.get(sub), dict):
                for k in ("request", "streaming"):
                    if k in d[sub]:
                        L.append(f"- **P3 {k}:** {d[sub][k]}")
    L.append("- **Alternation:** A and B run in blocks, the block order rotating every round; spreads are p10/p90 "
             "of per-round values (or bootstrap where stated).")
    for p in res.get("plots", []) or []:
        L.append(f"\n![{p}]({p})")
    L.append("")
    return "\n".join(L)


def _spread(x: dict) -> str:
    s = ""
    if x.get("p10") is not None:
        s = f"{_fmt(x['p10'])} – {_fmt(x['p90'])}"
    if x.get("min") is not None:
        s += f" ({_fmt(x['min'])} – {_fmt(x['max'])})"
    return s.strip()


def _met(x: dict, quick: bool) -> str:
    m = x.get("met")
    if m is None:
        return "n/a"
    s = "met" if m else "**not met**"
    return s + (" (quick)" if quick else "")


def _pct(v) -> str:
    return "?" if v is None else f"{v:.0%}"
