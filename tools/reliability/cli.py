"""The reliability suite: every fault scenario against a real `lvm-edge run`.

    python -m tools.reliability --quick                          # results in a new temporary folder
    python -m tools.reliability --only powercut,fuzz --out docs/reliability

Scenarios (each a module ``tools/reliability/<name>.py`` with ``run(quick, workdir, log) -> dict``
holding "passed"): rtsp (camera outages), media (bad media), powercut, fuzz, load, soak,
alert_faults (alert delivery across broker and runtime kills). A module that is absent, or a
scenario whose tool is not installed (alert_faults needs mosquitto), is reported "not available", not failed. The bundle: --bundle, else
$LVM_RELIABILITY_BUNDLE, else the shipped engines/lvm-tiny-fp32; one that is absent is exported
there with lvm-export first, as `lvm-edge demo` does. Writes ``results.json`` (everything each
scenario measured) and ``results.md`` (one row per scenario) under --out, a new temporary folder
unless given; with --only, the other scenarios' earlier results there are kept. Exit 1 if any
scenario ran and failed, 2 on bad arguments; without a bundle it stops at once with one line.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from edge_runtime.cli.common import CliError
from edge_runtime.cli.demo import ensure_bundle
from tools.reliability.common import BUNDLE_ENV, REPO, default_bundle
from tools.repo_paths import shown

SCENARIOS = ("rtsp", "media", "powercut", "fuzz", "load", "soak", "alert_faults")
TARGETS = {
    "rtsp": "camera outages: reconnects, memory kept, gaps recorded",
    "media": "bad media: one line each, never a crash",
    "powercut": "100 % consistent restores after ≥ 100 SIGKILLs; damaged snapshot set aside in one line",
    "fuzz": "≥ 1,000 generated requests: 0 responses ≥ 500, every 4xx a one-line error body",
    "load": "one camera at its real pace; 32 clients at 2 requests/s each (paced, open loop): 0 errors, p99 ≤ 50 ms, "
            "every frame processed; beside it, the saturation throughput of 32 closed-loop clients and its p99",
    "soak": "24 stream-hours: RSS growth ≤ 1 %, fds and threads constant",
    "alert_faults": "20 broker kills and 20 runtime SIGKILLs: 0 alerts lost, every copy with its alert's id, "
                    "every alert's evidence JPEGs whole",
}


def _module(name: str):
    try:
        return importlib.import_module(f"tools.reliability.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"tools.reliability.{name}":
            return None
        raise


def run_one(name: str, quick: bool, workdir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    mod = _module(name)
    if mod is None:
        return {"available": False, "passed": None}
    t0 = time.monotonic()
    try:
        res = mod.run(quick, workdir, log=log)
    except Exception as err:  # noqa: BLE001 — one scenario's crash is its result, not the suite's end
        res = {"passed": False, "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
    res.setdefault("wall_s", round(time.monotonic() - t0, 1))
    res.setdefault("available", True)  # a scenario may say its tool is missing
    return res


def summary(name: str, r: dict[str, Any]) -> str:
    """One cell: the scenario's headline figures."""
    if not r.get("available"):
        return f"not available: {r['why']}" if r.get("why") else "not available"
    if r.get("error") and name in ("fuzz", "load", "soak"):
        return f"error: {r['error'][:120]}"
    if name == "powercut":
        d = r.get("damaged") or {}
        return (f"{r.get('consistent_restores')}/{r.get('restores')} consistent restores after {r.get('kills')} kills "
                f"({r.get('kills_inside_snapshot_write')} inside a snapshot write); memory lost p50 "
                f"{r['lost_stream_s']['p50']} s, max {r['lost_stream_s']['max']} s of stream; damaged snapshots "
                f"{sum(c.get('ok', False) for c in d.values())}/{len(d)} set aside in one line")
    if name == "fuzz":
        return (f"{r.get('generated_requests')} generated + {len(r.get('nasties') or [])} hand-made requests: "
                f"{r.get('server_errors')} responses ≥ 500, {len(r.get('failures') or [])} bad error bodies")
    if name == "load":
        p, sat = r.get("paced") or {}, r.get("saturation") or {}
        return (f"paced, {r.get('clients')} clients at {p.get('rate_per_client', 0):g}/s ({p.get('requests_per_s')}/s) "
                f"while the camera streams at its pace: p50 {p.get('p50_ms')} ms, **p99 {p.get('p99_ms')} ms**, "
                f"{p.get('errors')} errors; "
                f"saturation ({r.get('clients')} closed-loop clients): {sat.get('requests_per_s')} requests/s, p50 "
                f"{sat.get('p50_ms')} ms, p99 {sat.get('p99_ms')} ms, {sat.get('errors')} errors; the camera's "
                f"{r.get('frames_in')} frames processed, dropped {r.get('dropped')}; the clients' own CPU "
                f"{r.get('client_cpu_ms_per_request')} ms a request")
    if name == "soak":
        rss = r.get("rss_mb") or {}
        return (f"{len(r.get('samples') or [])} stream-hours: RSS {rss.get('first')} → {rss.get('last')} MB "
                f"({(r.get('rss_growth') or 0) * 100:+.2f} %), fds {r.get('fds')}, threads {r.get('threads')}, "
                f"state dir {r.get('state_dir_mb')} MB")
    if name == "alert_faults":
        return "; ".join(f"{k}: {x['raised']} raised, {x['lost']} lost, {x['duplicates']} duplicates ({x['unknown_ids']} "
                         f"with ids never raised), {x.get(k + '_kills')} kills, {x.get('evidence_intact')}/{x.get('with_evidence')} "
                         f"alerts with evidence intact" for k, x in r.items()
                         if k in ("broker", "runtime") and isinstance(x, dict))
    keys = [k for k in r if k not in ("passed", "available", "wall_s", "quick", "run_at", "commit")
            and not isinstance(r[k], (dict, list))]
    parts = [f"{k} {'passed' if v['passed'] else 'FAILED'}" for k, v in r.items()
             if isinstance(v, dict) and isinstance(v.get("passed"), bool)]  # sub-scenarios
    parts += [f"{k} {r[k]}" for k in keys[:6]]
    return f"{', '.join(parts)} (details: results.json)" if parts else "details: results.json"


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except OSError:
        commit = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit,
            "load_avg_at_start": os.getloadavg()[0]}


def write_results(out: Path, results: dict[str, Any], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "scenarios": results}, indent=1) + "\n")
    lines = ["# Reliability: results", "",
             f"`python -m tools.reliability{' --quick' if meta['quick'] else ''}` on {meta['machine']['cores']} cores "
             f"({meta['machine']['cpu']}); load average {meta['machine']['load_avg_at_start']:.1f} at the start of "
             f"the last run (the machine is shared). Each row says which run (UTC, commit) it is from; "
             f"everything measured: `results.json`.", "",
             "| scenario | target | result | passed | run |", "|---|---|---|---|---|"]
    for name in sorted(results, key=SCENARIOS.index):
        r = results[name]
        verdict = "n/a" if r.get("passed") is None else ("yes" if r["passed"] else "**no**")
        when = f"{r.get('run_at', '')}, {r.get('commit', '')}{', --quick' if r.get('quick') else ''}"
        lines.append(f"| {name} | {TARGETS.get(name, '')} | {summary(name, r)} | {verdict} | {when} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.reliability", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="small budgets (minutes, not the full suite)")
    ap.add_argument("--only", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}")
    ap.add_argument("--out", help="where results.json / .md go (default: a new temporary folder; the suite's "
                                  "published figures are in docs/reliability)")
    ap.add_argument("--bundle", type=Path, help=f"the bundle the scenarios run (default: ${BUNDLE_ENV}, else "
                                                "engines/lvm-tiny-fp32; exported there when absent)")
    ap.add_argument("--workdir", help="where runs keep state and logs (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"reliability: unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    bundle = (args.bundle or default_bundle()).expanduser().absolute()
    if not (bundle / "manifest.json").is_file():
        try:
            ensure_bundle(bundle)
        except CliError as err:
            print(f"reliability: {err}", file=sys.stderr)
            return err.code
    os.environ[BUNDLE_ENV] = str(bundle)  # the scenarios' RunProcess and subprocesses read it
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lvm-reliability-results-"))
    print(f"reliability: bundle {bundle}; results to {out}", flush=True)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="lvm-reliability-"))
    meta = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "bundle": shown(bundle)}
    results: dict[str, Any] = {}
    previous = out / "results.json"
    if args.only and previous.is_file():  # a partial run updates its rows, keeps the others
        try:
            results = {k: v for k, v in json.loads(previous.read_text())["scenarios"].items() if k in SCENARIOS}
        except (ValueError, KeyError):
            results = {}
    try:
        for name in names:
            print(f"reliability: {name} ...", flush=True)
            results[name] = run_one(name, args.quick, work / name, log=lambda m: print(m, flush=True))
            r = results[name]
            r.update(quick=args.quick, run_at=meta["date"], commit=meta["machine"]["commit"])
            verdict = "not available" if not r["available"] else ("passed" if r["passed"] else "FAILED")
            print(f"reliability: {name} {verdict} ({r.get('wall_s', 0)} s): {summary(name, r)}", flush=True)
            write_results(out, results, meta)  # partial results survive an interrupted run
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"reliability: wrote {out / 'results.json'} and {out / 'results.md'}", flush=True)
    return 1 if any(r.get("passed") is False for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
