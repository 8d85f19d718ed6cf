"""Shared fixtures. ``tiny_bundle``: ONE fp32 bundle per test run, of the shipped lvm-tiny
checkpoint, built with lvm-export's ``main --skip-gate`` in the worker that first needs it (a broken
exporter fails the tests that need it; test_export runs the console script itself).

What the tests can reuse is kept under the checkout's .cache/, keyed by everything it can depend on
(``_cache_key``: every .py under export/ and every edge_runtime module they import, lazily or not (the
runtime code the exporter checks parity with, the generator it calibrates on), every file under configs/
and checkpoints/, and this file), so a second local run of the same code skips the work, a change of
what lvm-export runs redoes it, and a change of the serving side (alerts, API, CLI) does not:
- .cache/test-bundles/<key>: the test bundle (~25 s of export);
- .cache/test-cache/<key>: $LVM_EDGE_CACHE of lvm-train / lvm-export / lvm-eval, in-process or as
  subprocesses (backbone tokens), never the user's home.
CI starts from a fresh checkout and builds each once. The suite runs in pytest-xdist workers (one a
core, at most ``MAX_WORKERS``, whole files to a worker so module fixtures are built once): a file lock
makes the first worker build a bundle while the others wait for it; the caches' files are written
atomically, so the workers share them.
"""
from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "checkpoints" / "lvm-tiny.safetensors"
SHIPPED_BUNDLE = REPO / "engines" / "lvm-tiny-fp32"
KEYED = [("configs", "*"), ("checkpoints", "*")]  # with _export_code()
STALE_S = 3600  # other keys' bundles untouched this long are removed (a concurrent run may use a fresh one)
MAX_WORKERS = 4  # past this the suite's few long subprocess tests, not the cores, set its time
# The files that take longest (``--durations`` on 2 cores), longest first: they go to the workers first
# (pyproject's --no-loadscope-reorder keeps this order; xdist would otherwise hand out the files with the
# most tests first), so that short files fill the end of the run instead of one worker finishing a long file alone.
LONGEST_FIRST = ["test_train.py", "test_export.py", "test_readme.py", "test_s5.py", "test_reliability_quick.py",
                 "test_reliability_rtsp.py", "test_bench.py", "test_own_footage.py", "test_bench_streams.py",
                 "test_train_data.py", "test_labels_travel.py", "test_reader_bundle.py", "test_timeline.py",
                 "test_e2e.py", "test_reliability_media.py", "test_eval_data.py", "test_seen_evidence.py"]
TEST_BUNDLE_CALIB = "demo://checkout?seed=1&duration=32"  # the test bundle's parity frames (test_export's too)
BUILDS_THE_BUNDLE = "test_export.py"  # its first test needs the test bundle: its worker builds it


def pytest_configure(config):
    """Bytecode caches on (``_write_bytecode``); each xdist worker's share of the cores as OMP_NUM_THREADS,
    set before any test imports torch and inherited by the commands the tests start (their default
    threads read it: export/cpu_threads.py).
    Two workers each running torch on both of 2 cores made OpenMP's threads spin against each other:
    a test of 60 small training steps took 536 s that way and 31 s with one thread each."""
    if not hasattr(config, "workerinput"):  # the controller, before it starts the workers
        _write_bytecode()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        share = max(1, len(os.sched_getaffinity(0)) // workers)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(share))


def _write_bytecode() -> None:
    """Python's bytecode caches (__pycache__/, gitignored) on for this run and every process it starts,
    PYTHONDONTWRITEBYTECODE or not: without them each worker compiles and assert-rewrites every test
    module again at collection (8-9 s of each worker's 20) and each lvm-edge or lvm-export the tests
    start compiles the package again."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        sys.dont_write_bytecode = False


def pytest_collection_modifyitems(config, items):
    """Longest files first (LONGEST_FIRST); and the files that need the test bundle after every file that
    does not, but for the one that builds it (BUILDS_THE_BUNDLE, handed out first): the other workers
    work through the files that need no bundle while it is built, instead of waiting on its lock."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    waits = {item.path.name for item in items if "tiny_bundle" in getattr(item, "fixturenames", ())}
    waits.discard(BUILDS_THE_BUNDLE)
    items.sort(key=lambda item: (item.path.name != BUILDS_THE_BUNDLE, item.path.name in waits,
                                 rank.get(item.path.name, len(rank))))  # stable: the rest keep their order


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker a core and one more, at most MAX_WORKERS. Some files
    mostly wait (live-paced streams, camera outages, broker restarts): the extra worker runs another
    file on the core they leave idle. Each worker's torch still gets one thread (pytest_configure)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores + 1))


@contextmanager
def build_lock(cache: Path):
    """Held while a bundle under ``cache`` is built: another worker or run waits, then finds it built."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f"{cache.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_code() -> set[Path]:
    """export/'s .py files and the edge_runtime modules they reach through imports (function-level ones
    included, read from the source rather than run), with their packages' __init__ files."""
    def module_file(name: str) -> Path | None:
        base = REPO.joinpath(*name.split("."))
        return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)

    todo = [p for p in (REPO / "export").rglob("*.py") if "__pycache__" not in p.parts]
    seen = set(todo)
    while todo:
        path = todo.pop()
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:  # relative: from the file's package, up level-1
                    mod = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([mod] if mod else []))
                names |= {mod} | {f"{mod}.{a.name}" for a in node.names}
        for name in names:
            parts = name.split(".")
            if parts[0] not in ("export", "edge_runtime"):
                continue
            for i in range(1, len(parts) + 1):  # the module and the packages it is in
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


@lru_cache(maxsize=1)  # read by several fixtures and the summary: the files are read once
def _cache_key() -> str:
    h = hashlib.sha256()
    files = [p for top, pattern in KEYED for p in (REPO / top).rglob(pattern)
             if p.is_file() and "__pycache__" not in p.parts] + sorted(_export_code())
    for p in sorted(set(files + [Path(__file__).resolve()])):
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_tiny_bundle(dest: Path) -> tuple[Path, str]:
    """-> (bundle dir, how it was built): the shipped lvm-tiny checkpoint, exported as the user's
    first command does (trained weights, so tests on real footage test what users run). It runs in
    the worker that first needs it (test_export's, handed out first): the in-process exports of the
    same checkpoint there take its traced graphs and its OOD fit instead of redoing them."""
    import contextlib
    import io

    from export.cli import export as cli_export

    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "lvm-tiny-fp32"
    err = io.StringIO()
    # parity on a 32 s clip and one timed run: the test bundle needs the graphs, not the report
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = cli_export.main(["--precision", "fp32", "--checkpoint", str(SHIPPED), "--out", str(out), "--skip-gate",
                              "--bench-runs", "1", "--calib", TEST_BUNDLE_CALIB, "--no-progress",
                              # the memory path at its own fps: the event path's tests use the shipped bundle
                              "--no-events"])
    if rc != 0 or not (out / "manifest.json").is_file():
        raise RuntimeError(f"lvm-export failed (rc {rc}): {err.getvalue().strip()[-2000:]}")
    return out, "lvm-export --precision fp32 --skip-gate --no-events of checkpoints/lvm-tiny.safetensors"


def _fresh(folder: Path) -> Path:
    """``folder`` (of this code's key) made, and its siblings of older code untouched for STALE_S removed."""
    for old in folder.parent.glob("*"):
        if old.is_dir() and not old.name.startswith(folder.name) and time.time() - old.stat().st_mtime > STALE_S:
            shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.utime(folder)  # in use: not stale for other sessions
    return folder


@pytest.fixture(scope="session", autouse=True)
def _export_cache():
    """lvm-train / lvm-export / lvm-eval (also as subprocesses) keep backbone tokens and exported
    graphs here: one folder for this code, shared by the workers."""
    old = os.environ.get("LVM_EDGE_CACHE")
    os.environ["LVM_EDGE_CACHE"] = str(_fresh(REPO / ".cache" / "test-cache" / _cache_key()))
    yield
    if old is None:
        os.environ.pop("LVM_EDGE_CACHE", None)
    else:
        os.environ["LVM_EDGE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    cache = REPO / ".cache" / "test-bundles" / _cache_key()
    done = cache / "lvm-tiny-fp32" / "manifest.json"
    with build_lock(cache):
        if not done.is_file():
            shutil.rmtree(_fresh(cache), ignore_errors=True)  # bundles of older code go too
            tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            _, how = build_tiny_bundle(tmp)
            (tmp / "BUILT_BY").write_text(how + "\n")
            os.replace(tmp, cache)
    os.utime(cache)  # in use: not stale for other sessions
    _remember_ood(cache / "lvm-tiny-fp32")
    return cache / "lvm-tiny-fp32"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    built_by = REPO / ".cache" / "test-bundles" / _cache_key() / "BUILT_BY"  # the workers built it, not this process
    if built_by.is_file():
        terminalreporter.write_line(f"test bundle (lvm-tiny fp32): {built_by.read_text().strip()}")


@pytest.fixture(scope="session")
def engine(tiny_bundle):
    """The test bundle's graphs, opened once for every test file that answers from its own streams
    (an Engine holds no stream: each test makes its own with ``engine.new_stream()``)."""
    from edge_runtime.engine.engine import Engine

    with Engine(tiny_bundle, threads=2) as e:
        yield e


@pytest.fixture(scope="session")
def memory_40s(engine):
    """A stream's arrays after 40 s of random frames: the runtimes that need a memory start from it
    (``runtime.stream.load_state_dict(memory_40s)``)."""
    import numpy as np

    stream = engine.new_stream()
    engine.ingest(stream, np.random.default_rng(0).integers(0, 256, (40, 112, 112, 3), dtype=np.uint8), np.arange(40.0))
    return stream.state_dict()


@pytest.fixture(scope="session")
def shipped_engine():
    """The shipped bundle (engines/lvm-tiny-fp32, what `lvm-edge demo` runs), opened once: the tests
    that check real events against the generator's annotations read it."""
    from edge_runtime.engine.engine import Engine

    with Engine(SHIPPED_BUNDLE, threads=1) as e:
        yield e


_OOD_FITTED: dict[tuple, tuple[bytes, dict]] = {}  # this worker's fits, by what a fit reads


def _ood_key(backbone: Path, cfg_digest: str, seed: int, threads: int) -> tuple:
    from edge_runtime.file_hash import sha256_file

    return sha256_file(backbone), cfg_digest, seed, threads


def _remember_ood(bundle: Path) -> None:
    """A bundle's OOD fit on the generator (the test bundle's, which another worker or an earlier run
    may have built), for this worker's in-process exports of the same backbone graph."""
    from edge_runtime.memory.ood import OOD_FILE

    m = json.loads((bundle / "manifest.json").read_text())
    if m.get("ood") and "generator" in m["ood"].get("fitted_on", {}) and "threads" in m.get("export", {}):
        key = _ood_key(bundle / "backbone.onnx", m["config_sha256"], m["config"]["train"]["seed"],
                       m["export"]["threads"])
        _OOD_FITTED.setdefault(key, ((bundle / OOD_FILE).read_bytes(), m["ood"]))


@pytest.fixture(scope="session", autouse=True)
def _ood_once_per_backbone():
    """lvm-export's OOD statistics put 640 generator frames through the bundle's backbone graph (10-20 s
    of every export); an in-process export of a backbone graph already fitted in this worker (same
    graph bytes, config, seed and threads: the same statistics) gets that fit's file and manifest
    section. Fits on a dataset split (--data) always run; tests/test_ood.py checks the fit itself."""
    import copy

    from edge_runtime.memory.ood import OOD_FILE
    from export.evaluate import ood_stats

    fit = ood_stats.write_bundle_ood

    def once(bundle_dir, cfg, *, threads=2, seed=0, train=None, notes=None, tick=None):
        if train is not None:
            return fit(bundle_dir, cfg, threads=threads, seed=seed, train=train, notes=notes, tick=tick)
        key = _ood_key(Path(bundle_dir) / "backbone.onnx", cfg.digest(), seed, threads)
        if key not in _OOD_FITTED:
            section = fit(bundle_dir, cfg, threads=threads, seed=seed, notes=notes, tick=tick)
            _OOD_FITTED[key] = ((Path(bundle_dir) / OOD_FILE).read_bytes(), section)
        else:
            (Path(bundle_dir) / OOD_FILE).write_bytes(_OOD_FITTED[key][0])
            if tick:
                tick(ood_stats.ood_step()[1])
        return copy.deepcopy(_OOD_FITTED[key][1])

    patch = pytest.MonkeyPatch()
    patch.setattr(ood_stats, "write_bundle_ood", once)
    yield
    patch.undo()


@pytest.fixture
def perfect_parity(monkeypatch):
    """For export tests about something else than parity: its results are replaced by perfect ones
    (parity is checked by its own tests)."""
    from export.cli import export as cli_export

    ok = {"backbone": {"max_abs": 0.0}, "sampler": {"topm_recall": 1.0, "kept_feature_max_abs": 0.0},
          "heads": {"max_abs": 0.0}}
    monkeypatch.setattr(cli_export.Exporter, "_parity", lambda self, desc, d, feeds: ok)


@pytest.fixture
def fast_export(perfect_parity, monkeypatch):
    """For export tests about something else (the gate, failures, where frames come from): parity
    and CPU timing are replaced by perfect results; they are checked by their own tests."""
    from export.cli import export as cli_export

    monkeypatch.setattr(cli_export.Exporter, "_latency", lambda self, d, feeds: {})


@pytest.fixture
def lane_app(shipped_engine, tmp_path):
    """One lane served by the API on the shipped bundle: (TestClient, its hub, its Runtime)."""
    from fastapi.testclient import TestClient

    from edge_runtime.serve.api import create_app
    from edge_runtime.serve.pipeline import Runtime

    rt = Runtime(shipped_engine, state_dir=tmp_path / "state")
    asgi = create_app(rt)
    with TestClient(asgi) as client:
        yield client, asgi.app.state.streams, rt
    rt.close()
