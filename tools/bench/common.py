"""Shared pieces of tools/bench/cli.py: statistics, figures with goals, CPU-load monitoring, RSS,
block-alternating timing, and the benchmark context (checkpoints, bundles built with lvm-export,
rendered frames), cached under .cache/bench/ (git-ignored).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.file_hash import sha256_file
from tools.repo_paths import REPO, shown as _shown

CACHE = REPO / ".cache" / "bench"
pc = time.perf_counter

# Generator seeds used by the benchmark: disjoint from training (< 1_000_000), lvm-eval
# (1_000_000 + ...), the accuracy gate and calibration (7_000_000).
SEED_BASE = 8_000_000


# ----------------------------------------------------------------------------------------------
# statistics and figures

def _r(x: float | None, nd: int = 4) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    x = float(x)
    if x == 0:
        return 0.0
    return round(x, max(nd - 1 - int(math.floor(math.log10(abs(x)))), 0))


def stats(xs) -> dict:
    """median, p10, p90, min, max, n of a sample (None-safe when empty)."""
    a = np.asarray([x for x in xs if x is not None and math.isfinite(x)], np.float64)
    if a.size == 0:
        return {"median": None, "p10": None, "p90": None, "min": None, "max": None, "n": 0}
    return {"median": _r(np.median(a)), "p10": _r(np.percentile(a, 10)), "p90": _r(np.percentile(a, 90)),
            "min": _r(a.min()), "max": _r(a.max()), "n": int(a.size)}


GOAL_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "==": lambda v, t: v == t}


def figure(value, *, unit: str, spread: dict | None = None, samples=None, goal: tuple[str, float] | None = None,
           note: str = "") -> dict:
    """One reported number: value, spread (p10/p90/min/max/n), goal and whether it is met."""
    out: dict[str, Any] = {"value": _r(value) if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
                           else value, "unit": unit}
    if samples is not None:
        spread = stats(samples)
    if spread is not None:
        out.update({k: spread.get(k) for k in ("p10", "p90", "min", "max", "n") if k in spread})
    if goal is not None:
        op, thr = goal
        out["goal"] = f"{op} {thr:g}"
        v = out["value"]
        out["met"] = None if v is None or isinstance(v, str) else bool(GOAL_OPS[op](float(v), thr))
    if note:
        out["note"] = note
    return out


def ratio_spread(num: list[float], den: list[float]) -> dict:
    """Spread of a ratio from paired blocks (round i of A over round i of B)."""
    return stats([a / b for a, b in zip(num, den) if b])


# ----------------------------------------------------------------------------------------------
# machine load, memory

def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _proc_stat() -> tuple[int, int] | None:
    """(busy jiffies, total jiffies) over all CPUs."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    v = [int(x) for x in f]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8]) if len(v) >= 8 else sum(v)
    return total - idle, total


def _own_jiffies() -> int | None:
    """This process plus its waited-for children (lvm-export subprocesses), in jiffies."""
    try:
        s = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    f = s[s.rfind(")") + 2:].split()
    return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime


class CpuMonitor:
    """Foreign CPU load during a stretch of the run: machine busy time minus our own, as a fraction
    of all cores. Also records /proc/loadavg at both ends."""

    def __init__(self) -> None:
        self.t0 = pc()
        self.l0 = loadavg()
        self.s0 = _proc_stat()
        self.j0 = _own_jiffies()

    def stop(self) -> dict:
        wall = pc() - self.t0
        s1, j1 = _proc_stat(), _own_jiffies()
        out = {"wall_s": round(wall, 2), "loadavg_start": self.l0, "loadavg_end": loadavg(), "cores": cpu_count()}
        if self.s0 and s1 and self.j0 is not None and j1 is not None:
            busy, total = s1[0] - self.s0[0], s1[1] - self.s0[1]
            if total > 0:
                own = j1 - self.j0
                out["machine_busy_frac"] = round(busy / total, 3)
                out["own_busy_frac"] = round(min(own / total, 1.0), 3)
                out["foreign_busy_frac"] = round(max(busy - own, 0) / total, 3)
        return out


def rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def alternate(blocks: dict[str, Callable[[int], Any]], rounds: int) -> dict[str, list]:
    """Run each block once per round, rotating the order every round (A B, B A, ...), so that a
    drift in machine load hits every block alike. -> {name: [result per round]}."""
    names = list(blocks)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(blocks[n](r))
    return out


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    ts = []
    for _ in range(n):
        t0 = pc()
        fn()
        ts.append(pc() - t0)
    return ts


# ----------------------------------------------------------------------------------------------
# context

class Ctx:
    """What every part needs: options, the log, checkpoints, bundles, frames, results."""

    def __init__(self, *, quick: bool, threads: int, out: Path, checkpoint: str | None, log=print,
                 bundle: str | None = None) -> None:
        self.quick = quick
        self.given_bundle = bundle  # --bundle: the lvm-tiny fp32 bundle the parts run, instead of an export
        self.threads = threads
        self.out = out
        self.log = log
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.figures: dict[str, dict] = {}
        self.parts: dict[str, dict] = {}
        self._checkpoint_arg = checkpoint
        self._ckpts: dict[str, tuple[Path, dict]] = {}
        self._bundles: dict[tuple[str, str], tuple[Path | None, dict]] = {}
        self._frames: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._cfgs: dict[str, Any] = {}

    def weights_used(self) -> dict[str, dict]:
        """What the report says of each checkpoint the run resolved, by model config name (lvm-tiny's
        from the given bundle's manifest when no part loaded a checkpoint)."""
        used = {name: info for name, (_, info) in self._ckpts.items()}
        if self.given_bundle and "lvm-tiny" not in used:
            manifest = json.loads((Path(self.given_bundle) / "manifest.json").read_text())
            used["lvm-tiny"] = {"weights": "the given bundle's (--bundle)", "path": _shown(Path(self.given_bundle)),
                                "checkpoint": manifest.get("checkpoint")}
        return used

    def bundles_used(self) -> dict[str, dict]:
        """What the report says of each bundle the run resolved, by ``<model>-<precision>``."""
        return {f"{model}-{precision}": info for (model, precision), (_, info) in self._bundles.items()}

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    def fig(self, key: str, **kw) -> dict:
        self.figures[key] = figure(**kw)
        return self.figures[key]

    def cfg(self, name: str):
        if name not in self._cfgs:
            from edge_runtime.config import resolve_model_config

            self._cfgs[name] = resolve_model_config(name)
        return self._cfgs[name]

    # -- weights ----------------------------------------------------------------------------
    def checkpoint(self, cfg_name: str) -> tuple[Path, dict]:
        """The shipped checkpoint for lvm-tiny when it exists (or --checkpoint), otherwise a freshly
        initialised model (torch seed 0) saved with save_checkpoint. Resolved once per run."""
        if cfg_name in self._ckpts:
            return self._ckpts[cfg_name]
        from export.model.checkpoint import DEFAULT_CHECKPOINT, checkpoint_config
        from export.onnx.reader_graphs import default_reader_path

        cfg = self.cfg(cfg_name)
        cand = Path(self._checkpoint_arg) if self._checkpoint_arg and cfg_name == "lvm-tiny" else (
            DEFAULT_CHECKPOINT if cfg_name == "lvm-tiny" else None)
        info: dict[str, Any]
        if cand is not None and cand.is_file():
            ck_cfg = checkpoint_config(cand)
            if ck_cfg.arch_digest() != cfg.arch_digest():
                raise RuntimeError(f"{cand}: trained for {ck_cfg.name} with another architecture than configs/models/{cfg_name}.yaml")
            path = cand
            info = {"weights": "trained checkpoint", "path": _shown(cand), "sha256": sha256_file(cand)}
            if default_reader_path(cand).is_file():
                info["reader_sha256"] = sha256_file(default_reader_path(cand))
        else:
            if cand is not None and self._checkpoint_arg:
                raise FileNotFoundError(f"--checkpoint {cand}: not found")
            # keyed by the config and by the code that defines the tensors: a cached file from before a
            # change of the heads' code would no longer load
            code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((REPO / "export" / "model").glob("*.py"))
                                           )).hexdigest()
            path = CACHE / "checkpoints" / f"{cfg_name}-init-seed0-{cfg.arch_digest()[:12]}-{code[:8]}.safetensors"
            if not path.is_file():
                import torch

                from export.model.checkpoint import save_checkpoint
                from export.model.lvmnet import LVMNet

                torch.manual_seed(0)
                net = LVMNet(cfg).eval()
                save_checkpoint(net, path, {"note": "freshly initialised by tools/bench/cli.py (torch seed 0)"})
            reader = fresh_reader_beside(path, cfg)
            why = (f"{_shown(cand)} absent" if cand is not None else "speed only")
            info = {"weights": "freshly initialised (torch seed 0)", "why": why, "path": _shown(path),
                    "sha256": sha256_file(path), "reader": _shown(reader), "reader_sha256": sha256_file(reader)}
            if cfg_name == "lvm-tiny":
                self.notes.append(f"lvm-tiny weights are freshly initialised ({why}): speed figures are valid, "
                                  "accuracy figures are of an untrained model")
        self._ckpts[cfg_name] = (path, info)
        return path, info

    def load_net(self, cfg_name: str):
        from export.model.checkpoint import load_checkpoint

        path, _ = self.checkpoint(cfg_name)
        net, _ = load_checkpoint(path, self.cfg(cfg_name))
        return net.eval()

    # -- bundles ----------------------------------------------------------------------------
    def bundle(self, cfg_name: str, precision: str) -> tuple[Path | None, dict]:
        """A bundle from lvm-export (cached by checkpoint + export code + options); None + why when
        lvm-export fails (the parts that need it then report that error)."""
        key = (cfg_name, precision)
        if key in self._bundles:
            return self._bundles[key]
        if self.given_bundle and key == ("lvm-tiny", "fp32"):  # checked by the CLI
            path = Path(self.given_bundle)
            self._bundles[key] = (path, {"path": _shown(path), "built_by": "given (--bundle)"})
            return self._bundles[key]
        ckpt, ck_info = self.checkpoint(cfg_name)
        cfg = self.cfg(cfg_name)
        mode = "quick" if self.quick else "full"
        h = hashlib.sha256()
        for p in sorted((REPO / "export").rglob("*.py")) + [REPO / "edge_runtime" / "config.py"]:
            h.update(p.name.encode() + p.read_bytes())
        h.update(f"{ck_info['sha256']}|{ck_info.get('reader_sha256')}|{precision}|{mode}|{self.threads}".encode())
        out = CACHE / "bundles" / f"{cfg_name}-{precision}-{h.hexdigest()[:12]}"
        info: dict[str, Any] = {"path": _shown(out), "built_by": None}
        if (out / "manifest.json").is_file():
            info["built_by"] = (out / "BUILT_BY").read_text().strip() if (out / "BUILT_BY").is_file() else "cache"
            info["cached"] = True
            self._bundles[key] = (out, info)
            return out, info
        for old in (CACHE / "bundles").glob(f"{cfg_name}-{precision}-*"):
            shutil.rmtree(old, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        calib_s = 96 if self.quick else 600
        calib_frames = 48 if self.quick else 600
        cmd = [sys.executable, "-m", "export.cli.export", "--precision", precision, "--checkpoint", str(ckpt),
               "--out", str(out), "--skip-gate", "--no-progress", "--threads", str(self.threads),
               "--bench-runs", "1" if self.quick else "5", "--calib-frames", str(calib_frames),
               "--calib", f"demo://checkout?seed=7000000&duration={calib_s}",
               # the memory path's figures: the event head has its own benchmark (tools/bench/event_path.py)
               "--no-events"]
        self.log(f"building bundle {cfg_name} {precision} with lvm-export (cached in {_shown(out)}) ...")
        t0 = pc()
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=3600)
            rc, err = res.returncode, (res.stderr or res.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            rc, err = -1, str(e)
        info["export_s"] = round(pc() - t0, 1)
        info["command"] = "lvm-export " + " ".join(cmd[3:])
        if rc == 0 and (out / "manifest.json").is_file():
            info["built_by"] = "lvm-export"
            (out / "BUILT_BY").write_text("lvm-export\n")
            self._bundles[key] = (out, info)
            return out, info
        last = err.splitlines()[-1] if err else f"exit status {rc}"
        info["lvm_export_error"] = f"lvm-export exit {rc}: {last[:300]}"
        shutil.rmtree(out, ignore_errors=True)
        self.warn(f"{cfg_name} {precision} bundle not available: {info['lvm_export_error']}")
        self._bundles[key] = (None, info)
        return None, info

    def engine(self, cfg_name: str, precision: str = "fp32"):
        from edge_runtime.engine.engine import Engine

        path, _ = self.bundle(cfg_name, precision)
        if path is None:
            raise RuntimeError(f"no {cfg_name} {precision} bundle")
        return Engine(path, backend="onnxruntime", threads=self.threads)

    # -- frames -----------------------------------------------------------------------------
    def frames(self, seed: int, duration_s: float, size: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, frames uint8 (N, S, S, 3)) of a generator video, rendered once per run."""
        key = (seed, duration_s, size, fps)
        if key not in self._frames:
            from edge_runtime.checkout import CheckoutVideo

            v = CheckoutVideo(seed=seed, duration_s=duration_s, size=size)
            n = int(math.floor(duration_s * fps + 1e-9))
            frames = np.empty((n, size, size, 3), np.uint8)
            times = np.empty((n,), np.float64)
            t0 = pc()
            for i, (t, img) in enumerate(v.frames(fps)):
                times[i], frames[i] = t, img
            self.log(f"  rendered {n} frames ({size} px, {fps:g} fps, seed {seed}) in {pc() - t0:.1f} s")
            self._frames[key] = (times, frames)
        return self._frames[key]

    def drop_frames(self) -> None:
        self._frames.clear()


def fresh_reader_beside(ckpt: Path, cfg) -> Path:
    """A freshly initialised memory reader (torch seed 0) beside a freshly initialised checkpoint, where
    lvm-export finds a trained model's (``<stem>-reader.safetensors``): a bundle of fresh weights then
    has the graphs and answers the runtime runs by default, so its speed is the product's. Its
    calibration, class prior and timeline settings are the shipped reader's: they shape no graph and
    cost the same whatever their values (speed only; these answers mean nothing)."""
    import json

    import torch

    from export.model.checkpoint import DEFAULT_CHECKPOINT
    from export.model.reader import AnswerStep, MemoryReader, ReaderConfig, read_reader_file, save_reader
    from export.onnx.reader_graphs import default_reader_path

    out = default_reader_path(ckpt)
    if out.is_file():
        return out
    shipped = default_reader_path(DEFAULT_CHECKPOINT)
    md, _ = read_reader_file(shipped)
    prior = json.loads(md["prior"])
    if len(prior) != cfg.heads.num_activities:
        raise RuntimeError(f"{cfg.name}: {cfg.heads.num_activities} activities, the shipped reader's calibration "
                           f"{len(prior)}: no fresh reader for it")
    rc = ReaderConfig.from_dict(json.loads(md["reader_config"]))
    torch.manual_seed(0)
    reader, answer = MemoryReader(cfg, rc).eval(), AnswerStep(rc, 0.5 / cfg.stream.fps).eval()
    meta = {k: json.loads(md[k]) for k in ("prior", "calibration", "timeline") if k in md}
    meta.update(config_sha256=cfg.digest(), checkpoint=_shown(ckpt),
                train={"note": f"freshly initialised by tools/bench (torch seed 0); calibration, prior and "
                               f"timeline settings copied from {_shown(shipped)}: speed only"})
    save_reader(out, reader, answer, meta)
    return out




# ----------------------------------------------------------------------------------------------
# requests

def crops_for(video, queries, size: int) -> dict[int, np.ndarray]:
    ids = sorted({q.instance_id for q in queries if q.instance_id is not None})
    return {i: video.object_crop(i, size=size) for i in ids}
