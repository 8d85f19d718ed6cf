"""``lvm-edge``: run the stream + API, query it, check the host, or run the embedded demo.

    lvm-edge run --camera 0 --state-dir /var/lib/lvm-edge
    lvm-edge run --source demo://checkout?seed=3 --duration 3600 --api 127.0.0.1:8321
    lvm-edge query activity --api 127.0.0.1:8321 --image crop.png --start 0 --end 300
    lvm-edge doctor
    lvm-edge demo

Every failure a user can cause (missing camera, unreadable file, foreign bundle, bad config, busy
port) ends with one line on stderr and a non-zero exit status: 2 for bad input, 1 for a run that
failed, 130 / 143 never (signals drain and snapshot, then exit 0).
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edge_runtime import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "lvm-edge"


class CliError(Exception):
    """One line for the user, and an exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _resolve_path(p: str | Path) -> Path:
    """As given if it exists (or is absolute), else relative to the repository."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def _parse_hostport(text: str, default_port: int = 8321) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("http://"):
        text = text[len("http://"):].rstrip("/")
    if text.startswith("["):  # [::1]:8321
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, port = text, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise CliError(f"--api {text!r}: expected HOST:PORT") from None


# -- run ---------------------------------------------------------------------------------------
def _settings(args, overrides: dict[str, Any]):
    from edge_runtime.config import ConfigError
    from edge_runtime.runtime_config import load_runtime_settings, override

    try:
        s = load_runtime_settings(_resolve_path(args.config) if args.config else None)
        return override(s, overrides)
    except ConfigError as err:
        raise CliError(str(err)) from None
    except ValueError as err:  # pydantic on a bad override
        raise CliError(f"bad option: {' '.join(str(err).split())[:200]}") from None


def _open_engine(bundle: str, backend: str, threads: int | None):
    from edge_runtime.bundle import BundleError
    from edge_runtime.engine import Engine

    path = _resolve_path(bundle)
    try:
        eng = Engine(path, backend=backend, threads=threads)
    except BundleError as err:
        raise CliError(str(err)) from None
    for note in eng.notes:
        _say(note)
    return eng


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise CliError(f"--api {host}:{port}: cannot resolve host ({err.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise CliError(f"--api {host}:{port}: cannot listen ({err.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class StatusLine:
    """One status line, rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, runtime, every_s: float, stream=sys.stderr) -> None:
        self.runtime, self.every_s, self.stream = runtime, every_s, stream
        self.tty = stream.isatty()
        self._last = 0.0
        self._plain_every = max(every_s, 10.0)

    def text(self) -> str:
        s = self.runtime.status()
        cov = s["coverage"]
        cov_txt = f"{cov['start']:.0f}-{cov['end']:.0f}s" if cov["start"] is not None else "empty"
        mem = s["memory_bytes"] / 1e6
        err = f"  error: {s['error']}" if s["error"] else ""
        return (f"[{s['state']}] t={s['stream_time'] or 0:.0f}s  {s['fps']:.1f} fps ({s['stream_rate']:.1f}x)  "
                f"drops {s['dropped']}  coverage {cov_txt}  gaps {len(s['gaps'])}  mem {mem:.1f} MB  "
                f"clips {s['clips']}{err}")

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (self.every_s if self.tty else self._plain_every):
            return
        self._last = now
        line = self.text()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_run(args) -> int:
    from edge_runtime.pipeline import Runtime

    s = _settings(args, {"bundle": args.bundle, "backend": args.backend, "threads": args.threads,
                         "duration_s": args.duration, "source.realtime": args.realtime,
                         "state.dir": args.state_dir, "state.snapshot_every_s": args.snapshot_every})
    uri = str(args.camera) if args.camera is not None else (args.source or s.source.uri)
    if uri is None:
        raise CliError("no source: pass --source URI or --camera N (or set source.uri in --config)")
    serve = not (args.api and args.api.lower() in ("none", "off", "no"))
    host, port = _parse_hostport(args.api) if (serve and args.api) else (s.api.host, s.api.port)
    token = args.token or os.environ.get(s.api.token_env) or None
    if serve:
        from edge_runtime.api import check_bind

        try:
            check_bind(host, token)
        except ValueError as err:
            raise CliError(str(err)) from None
    _preflight_source(uri)
    if s.state.dir:
        _check_state_dir(Path(s.state.dir))
    engine = _open_engine(s.bundle, s.backend, s.threads)
    runtime = Runtime(engine, state_dir=s.state.dir, snapshot_every=s.state.snapshot_every_s,
                      max_batch=s.api.max_batch, batch_wait_s=s.api.batch_wait_ms / 1000,
                      batch_frames=s.batch_frames, warn=_say)
    if runtime.restored_from:
        cov = runtime.restored_from["coverage"]
        _say(f"restored memory from {runtime.restored_from['path']} (coverage {cov['start']}-{cov['end']} s, "
             f"{runtime.restored_from['frames_processed']} frames)")
    server = server_thread = sock = None
    if serve:
        import uvicorn

        from edge_runtime.api import create_app

        sock = _bind(host, port)
        app = create_app(runtime, token=token, max_body_bytes=s.api.max_body_bytes,
                         max_image_pixels=s.api.max_image_pixels)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        server_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lvm-api", daemon=True)
        server_thread.start()
        real_host, real_port = sock.getsockname()[:2]
        _say(f"API on http://{host}:{real_port} (docs at /docs){' with token' if token else ''}")

    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum, _frame):
        if signals:
            _say("second signal: exiting without draining")
            os._exit(1)
        signals.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    source_options = {"queue_size": s.source.queue_size, "stall_timeout_s": s.source.stall_timeout_s,
                      "reconnect_max_s": s.source.reconnect_max_s}
    runtime.start(uri, realtime=s.source.realtime, duration=s.duration_s, source_options=source_options)
    status = StatusLine(runtime, s.status_every_s)
    end_noted = False
    try:
        while not stop.wait(min(0.25, s.status_every_s)):
            status.tick()
            if server_thread is not None and not server_thread.is_alive():
                raise CliError("API server stopped unexpectedly", 1)
            if not runtime.running and runtime.wait(0):
                if runtime.state == "failed" or s.duration_s is not None or not serve:
                    break
                if not end_noted:
                    status.tick(force=True)
                    _say("source ended; still answering queries (Ctrl-C / SIGTERM to stop)")
                    end_noted = True
    finally:
        status.tick(force=True)
        status.done()
        if signals:
            _say(f"{signal.Signals(signals[0]).name}: draining and snapshotting")
        runtime.stop(snapshot=True)
        if runtime.last_snapshot_path is not None and runtime.state_dir is not None:
            _say(f"snapshot written to {runtime.last_snapshot_path}")
        if server is not None:
            server.should_exit = True
            server_thread.join(5.0)
        runtime.close()
    if runtime.state == "failed" and not signals:
        _say(runtime.error or "the source failed")
        return 1
    return 0


def _preflight_source(uri: str) -> None:
    """Fail fast, in one line, on a URI that cannot work (malformed, missing file or camera)."""
    try:
        from edge_runtime.sources.uri import parse_source_uri
        from edge_runtime.sources.base import SourceError
    except ImportError:
        return
    try:
        spec = parse_source_uri(uri)
    except SourceError as err:
        raise CliError(str(err)) from None
    if spec.kind == "file" and not Path(spec.path).is_file():
        raise CliError(f"{spec.label}: no such file")
    if spec.kind == "file" and not os.access(spec.path, os.R_OK):
        raise CliError(f"{spec.label}: not readable")
    if spec.kind == "camera" and spec.path and not os.path.exists(spec.path):
        raise CliError(f"{spec.label}: no such camera (no {spec.path}; see `lvm-edge doctor`)")


def _check_state_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CliError(f"--state-dir {path}: not writable ({err.strerror})") from None


# -- query -------------------------------------------------------------------------------------
def _http(method: str, url: str, body: dict | None, token: str | None, timeout: float = 60.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            msg = json.loads(err.read()).get("error")
        except Exception:
            msg = None
        raise CliError(f"{url}: HTTP {err.code}: {msg or err.reason}", 1) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"{url}: cannot reach the runtime ({reason})", 1) from None


def _image_b64(path: str) -> str:
    p = Path(path)
    try:
        return base64.b64encode(p.read_bytes()).decode()
    except OSError as err:
        raise CliError(f"--image {path}: {err.strerror}") from None


def cmd_query(args) -> int:
    host, port = _parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.kind == "status":
        print(json.dumps(_http("GET", base + "/v1/status", None, token), indent=2))
        return 0
    if args.start is None or args.end is None:
        raise CliError(f"query {args.kind}: --start and --end are required (stream seconds)")
    body: dict[str, Any] = {"start": args.start, "end": args.end}
    if args.kind in ("activity", "time"):
        if not args.image:
            raise CliError(f"query {args.kind}: --image PATH (the object's picture) is required")
        body["object_image"] = _image_b64(args.image)
    if args.kind in ("object", "time"):
        if args.activity is None:
            raise CliError(f"query {args.kind}: --activity NAME|ID is required")
        body["activity"] = int(args.activity) if args.activity.isdigit() else args.activity
    if args.kind == "object" and args.fps:
        body["fps"] = args.fps
    if args.kind == "time" and args.k:
        body["k"] = args.k
    print(json.dumps(_http("POST", f"{base}/v1/query/{args.kind}", body, token), indent=2))
    return 0


# -- doctor ------------------------------------------------------------------------------------
def cmd_doctor(args) -> int:
    import platform

    problems = 0

    def row(name: str, value: str, ok: bool | None = True) -> None:
        nonlocal problems
        mark = {True: "ok ", False: "BAD", None: " - "}[ok]
        if ok is False:
            problems += 1
        print(f"  [{mark}] {name:<22} {value}")

    print(f"lvm-edge {__version__} doctor")
    row("python", f"{platform.python_version()} ({platform.machine()}, {platform.system()})")
    from importlib import metadata

    for mod, dist in (("numpy", "numpy"), ("cv2", None), ("onnxruntime", "onnxruntime"), ("fastapi", "fastapi"),
                      ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"), ("pydantic", "pydantic"),
                      ("yaml", "PyYAML"), ("cuda", "cuda-bindings")):
        try:
            m = __import__(mod)
            try:
                version = metadata.version(dist) if dist else str(m.__version__)
            except metadata.PackageNotFoundError:
                version = str(getattr(m, "__version__", "installed"))
            row(mod, version)
        except ImportError:
            row(mod, "not installed", False if mod in ("numpy", "cv2", "onnxruntime") else None)
    from edge_runtime.bundle import probe_host

    host = probe_host()
    row("ORT providers", ", ".join(host.providers) or "none", bool(host.providers))
    row("TensorRT", host.tensorrt or "not installed (ONNX Runtime will be used)", None if not host.tensorrt else True)
    row("GPU", f"{host.gpu} (compute {host.compute_capability})" if host.gpu else "none found", None)
    row("JetPack / L4T", host.jetpack or "not a Jetson", None)
    # cameras
    nodes = sorted(Path("/dev").glob("video*"))
    if args.camera is not None:
        ok, msg = _probe_camera(args.camera)
        row(f"camera {args.camera}", msg, ok)
    elif nodes:
        ok, msg = _probe_camera(int(nodes[0].name[5:]) if nodes[0].name[5:].isdigit() else 0)
        row("cameras", f"{', '.join(n.name for n in nodes)}; first: {msg}", ok)
    else:
        row("cameras", "no /dev/video* (use --source FILE or demo://checkout)", None)
    # bundles
    from edge_runtime.bundle import BundleError, choose_backend, load_bundle

    bundles = [Path(args.bundle)] if args.bundle else sorted(p.parent for p in (REPO_ROOT / "engines").glob("*/manifest.json"))
    if not bundles:
        row("bundles", f"none in {REPO_ROOT / 'engines'} (export one with lvm-export)", None)
    for b in bundles:
        try:
            bundle = load_bundle(_resolve_path(b))
            backend, note = choose_backend(bundle, "auto", host)
            row(f"bundle {bundle.path.name}", f"{bundle.model} {bundle.precision} -> {backend}" + (f" ({note})" if note else ""))
        except BundleError as err:
            row(f"bundle {Path(b).name}", str(err), False)
    # state dir
    sd = Path(args.state_dir) if args.state_dir else None
    if sd is not None:
        try:
            _check_state_dir(sd)
            snap = sd / "snapshot.npz"
            row("state dir", f"{sd} writable" + (f"; snapshot {snap.stat().st_size} bytes" if snap.exists() else ""))
        except CliError as err:
            row("state dir", str(err), False)
    print(f"{problems} problem(s)")
    return 1 if problems else 0


def _probe_camera(index: int, timeout_s: float = 3.0) -> tuple[bool, str]:
    import cv2

    result: dict[str, Any] = {}

    def probe():
        cap = cv2.VideoCapture(index)
        try:
            ok = cap.isOpened()
            frame = cap.read()[1] if ok else None
            result["msg"] = (f"opened, frame {frame.shape[1]}x{frame.shape[0]}" if frame is not None
                             else "opened but no frame" if ok else "cannot open")
            result["ok"] = frame is not None
        finally:
            cap.release()

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        return False, f"no answer within {timeout_s:.0f} s"
    return bool(result.get("ok")), str(result.get("msg"))


# -- demo --------------------------------------------------------------------------------------
def _stale_reason(bundle: Path) -> str | None:
    """Why an existing bundle no longer matches the shipped checkpoint, or None if it does.

    A bundle exported from an older shipped checkpoint must not be reused silently."""
    import json

    from edge_runtime.bundle import sha256_file

    shipped = REPO_ROOT / "checkpoints" / "lvm-tiny.safetensors"
    try:
        ck = json.loads((bundle / "manifest.json").read_text()).get("checkpoint") or {}
    except (OSError, ValueError):
        return "its manifest is unreadable"
    if not shipped.is_file() or Path(str(ck.get("path", ""))).name != shipped.name:
        return None  # exported from some other checkpoint on purpose: the user's bundle
    if ck.get("sha256") != sha256_file(shipped):
        return "it was exported from an older shipped checkpoint"
    return None


def _ensure_bundle(bundle: Path, model: str = "lvm-tiny") -> None:
    if (bundle / "manifest.json").is_file():
        reason = _stale_reason(bundle)
        if reason is None:
            return
        _say(f"re-exporting {bundle}: {reason}")
    import importlib.util
    import shutil

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("export.cli_export") is None:
        raise CliError(f"{bundle} has no manifest.json and exporting it needs the export extra: "
                       f"pip install 'lvm-edge[export]' (or pass --bundle with an exported bundle)")
    exe = shutil.which("lvm-export", path=str(Path(sys.executable).parent)) or shutil.which("lvm-export")
    cmd = [exe] if exe else [sys.executable, "-m", "export.cli_export"]
    cmd += ["--precision", "fp32", "--out", str(bundle)]
    _say(f"no bundle at {bundle}: exporting it first ({' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))})")
    res = subprocess.run(cmd, cwd=REPO_ROOT)
    if res.returncode != 0 or not (bundle / "manifest.json").is_file():
        raise CliError(f"lvm-export failed (exit {res.returncode}); see its message above", 1)


def cmd_demo(args) -> int:
    import numpy as np

    from edge_runtime.pipeline import Runtime

    s = _settings(args, {"bundle": args.bundle, "backend": args.backend, "threads": args.threads,
                         "demo.seed": args.seed, "demo.duration_s": args.duration, "demo.queries": args.queries})
    try:
        from edge_runtime.checkout import CheckoutVideo, sample_queries
    except ImportError as err:
        raise CliError(f"the checkout generator is not available ({err})", 1) from None
    bundle = _resolve_path(s.bundle)
    if not bundle.is_absolute() and not bundle.exists():
        bundle = REPO_ROOT / bundle  # lvm-export runs in the repository: export where it will be found
    _ensure_bundle(bundle)
    engine = _open_engine(str(bundle), s.backend, s.threads)
    d = s.demo
    uri = f"demo://checkout?seed={d.seed}&duration={d.duration_s:g}" + (f"&look={d.look}" if d.look else "")
    runtime = Runtime(engine, warn=_say)
    _say(f"streaming {uri} through {engine.bundle.describe()} on {engine.backend}")
    t0 = time.monotonic()
    runtime.start(uri, realtime=False)
    status = StatusLine(runtime, s.status_every_s)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not runtime.wait(0.25):
        status.tick()
        if stop.is_set():
            break
    wall = time.monotonic() - t0
    runtime.stop(snapshot=False)
    status.tick(force=True)
    status.done()
    if runtime.state == "failed":
        runtime.close()
        raise CliError(runtime.error or "the demo source failed", 1)
    engine.flush()  # the stream has ended: commit the last partial clip too
    cov = engine.coverage
    print(f"\nstreamed {engine.frames_processed} frames ({(cov['end'] or 0):.0f} s of video) in {wall:.1f} s wall: "
          f"{(cov['end'] or 0) / max(wall, 1e-9):.1f} video-seconds per second; memory {engine.memory_bytes / 1e6:.2f} MB")
    video = CheckoutVideo(seed=d.seed, duration_s=d.duration_s, size=engine.S, look=d.look)
    queries = sample_queries(video.annotations(), d.queries, np.random.default_rng(d.seed))
    reqs = [{"type": q.type, "start": q.start, "end": q.end,
             "activity": q.activity_id if q.type != "activity" else None,
             "object_image": video.object_crop(q.instance_id, size=engine.S)
             if q.type != "object" and q.instance_id is not None else None, "k": 3} for q in queries]
    t1 = time.perf_counter()
    answers = runtime.query(reqs)
    qt = time.perf_counter() - t1
    print(f"{len(reqs)} queries answered in one batch in {qt * 1000:.0f} ms\n")
    print(demo_table(queries, answers, engine.labels))
    runtime.close()
    return 0


def demo_table(queries, answers, labels) -> str:
    """Answers beside ground truth, one row per query."""
    try:
        from edge_runtime.metrics import score_query
    except ImportError:
        score_query = None
    rows = [("#", "type", "window (s)", "given", "answer", "ground truth", "R@1x")]
    for i, (q, a) in enumerate(zip(queries, answers)):
        win = f"{q.start:.0f}-{q.end:.0f}"
        given = []
        if q.type != "activity" and q.activity_id is not None:
            given.append(labels[q.activity_id])
        if q.type != "object" and q.instance_id is not None:
            given.append(f"object #{q.instance_id}")
        if q.type == "activity":
            k = max(1, len(q.gt_activities))
            ans = ", ".join(labels[j] for j in a["ranked"][:k])
            gt = ", ".join(labels[j] for j in q.gt_activities)
        elif q.type == "object":
            gtb = [b for b in q.gt_boxes]
            ans = f"{len(a['boxes'])} boxes, first {_box(a['boxes'][0])}" if a["boxes"] else "no boxes"
            gt = f"{len(gtb)} boxes, first {_box(gtb[0][1:])}" if gtb else "none"
        else:
            s, e, p = a["intervals"][0] if a["intervals"] else (0, 0, 0)
            ans = f"{s:.0f}-{e:.0f} s (p {p:.2f})"
            gt = f"{q.gt_interval[0]:.0f}-{q.gt_interval[1]:.0f} s"
        hit = "?"
        if score_query is not None:
            try:
                val = score_query(q, a).get("recall@1x")
                hit = "n/a" if val is None else f"{float(val):.2f}"
            except Exception:
                hit = "?"
        rows.append((str(i), q.type, win, " + ".join(given) or "-", ans, gt, hit))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _box(b) -> str:
    return "[" + ", ".join(f"{float(x):.2f}" for x in list(b)[:4]) + "]"


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Long-video memory on the device: stream, remember, answer.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="stream a source into memory and serve the API")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--source", help="source URI: camera index, /dev/videoN, csi://N, rtsp://..., a file, demo://checkout?seed=N")
    src.add_argument("--camera", type=int, metavar="N", help="camera index (same as --source N)")
    r.add_argument("--bundle", help="bundle folder (default from --config, else engines/lvm-tiny-fp32)")
    r.add_argument("--api", metavar="HOST:PORT", help="where to serve the API (default 127.0.0.1:8321; 'none' to not serve)")
    r.add_argument("--token", help="API token (or env LVM_EDGE_TOKEN); required off-loopback")
    r.add_argument("--state-dir", help="snapshots go here and are restored from here")
    r.add_argument("--snapshot-every", type=float, metavar="S", help="periodic snapshot interval, wall seconds")
    r.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of stream time")
    r.add_argument("--realtime", action="store_true", default=None, help="pace files / demo at their own speed")
    r.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"))
    r.add_argument("--threads", type=int, help="inference threads")
    r.add_argument("--config", help="runtime config YAML (e.g. configs/runtime/kiosk.yaml); flags override it")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("query", help="ask a running lvm-edge over HTTP and print the JSON answer")
    q.add_argument("kind", choices=("activity", "object", "time", "status"))
    q.add_argument("--api", default="127.0.0.1:8321", metavar="HOST:PORT")
    q.add_argument("--start", type=float, help="window start, stream seconds")
    q.add_argument("--end", type=float, help="window end, stream seconds")
    q.add_argument("--image", help="object picture (PNG/JPEG file) for activity / time queries")
    q.add_argument("--activity", help="activity name or id for object / time queries")
    q.add_argument("--fps", type=float, help="box rate for object queries")
    q.add_argument("--k", type=int, help="intervals for time queries")
    q.add_argument("--token")
    q.set_defaults(func=cmd_query)

    d = sub.add_parser("doctor", help="check this host: versions, GPU/TensorRT, camera, bundles, state dir")
    d.add_argument("--bundle")
    d.add_argument("--camera", type=int)
    d.add_argument("--state-dir")
    d.set_defaults(func=cmd_doctor)

    m = sub.add_parser("demo", help="no camera needed: stream the checkout demo video, then answer queries beside ground truth")
    m.add_argument("--bundle")
    m.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"))
    m.add_argument("--threads", type=int)
    m.add_argument("--seed", type=int)
    m.add_argument("--duration", type=float, metavar="S", help="video seconds to stream (default 600)")
    m.add_argument("--queries", type=int)
    m.add_argument("--config", default=str(REPO_ROOT / "configs" / "runtime" / "demo.yaml"))
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    # OpenCV / FFmpeg print their own multi-line warnings on every failed reconnect; the sources
    # already say what went wrong in one line.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the embedded default: the demo
        args = parser.parse_args(["demo"] + list(argv or sys.argv[1:]))
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        _say(str(err))
        return err.code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:  # `lvm-edge query ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
