"""``lvm-edge doctor``: one row per thing this host needs (packages, accelerators, cameras, bundles,
state dir), each marked ok / BAD / informational; the exit status says whether any row is BAD."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.cli.common import REPO_ROOT, CliError, check_state_dir, resolve_path

# (import name, distribution name for the version, or None to read the module's __version__)
PACKAGES = (("numpy", "numpy"), ("cv2", None), ("onnxruntime", "onnxruntime"), ("fastapi", "fastapi"),
            ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"), ("pydantic", "pydantic"),
            ("yaml", "PyYAML"), ("cuda", "cuda-bindings"))
# Without these the stream cannot run at all; the others only cost a feature (API, metrics, TensorRT).
REQUIRED = ("numpy", "cv2", "onnxruntime")


class Checklist:
    """Prints ``[ok ] name  value`` rows; ``ok=False`` marks a problem, ``ok=None`` is information."""

    def __init__(self) -> None:
        self.problems = 0

    def row(self, name: str, value: str, ok: bool | None = True) -> None:
        mark = {True: "ok ", False: "BAD", None: " - "}[ok]
        if ok is False:
            self.problems += 1
        print(f"  [{mark}] {name:<22} {value}")


def cmd_doctor(args) -> int:
    from edge_runtime.backends.host import probe_host

    checks = Checklist()
    print(f"lvm-edge {__version__} doctor")
    settings = _check_config(checks, args.config) if args.config else None
    host = probe_host()
    _check_packages(checks, host)
    _check_accelerators(checks, host)
    _check_int8(checks)
    if settings is not None and args.camera is None:
        _check_sources(checks, settings)
    else:
        _check_cameras(checks, args.camera)
    bundle = args.bundle or (settings.bundle if settings is not None else None)
    bundles = _check_bundles(checks, bundle, host)
    state_dir = args.state_dir or (settings.state.dir if settings is not None else None)
    if state_dir:
        _check_state_dir(checks, Path(state_dir))
        _check_snapshots(checks, Path(state_dir), bundles if bundle else [])
    print(f"{checks.problems} problem(s)")
    return 1 if checks.problems else 0


def _check_config(checks: Checklist, config: str):
    """The runtime config as ``lvm-edge run --config`` reads it (None and a BAD row when it cannot be),
    with the alert section's start-time checks."""
    from pydantic import ValidationError

    from edge_runtime.cli.run import check_alerts
    from edge_runtime.config import ConfigError
    from edge_runtime.cli.runtime_config import load_runtime_settings

    try:
        settings = load_runtime_settings(resolve_path(config))
    except (ConfigError, ValidationError) as err:
        checks.row("config", str(err).splitlines()[0], False)
        return None
    try:
        check_alerts(settings)
    except CliError as err:
        checks.row("config", f"{config}: {err}", False)
        return settings
    rules = ", ".join(settings.alerts.rules) if settings.alerts.enabled else "no alert rules"
    checks.row("config", f"{config}: valid; {rules}")
    return settings


def _check_sources(checks: Checklist, settings) -> None:
    """Each source the config streams from, as ``lvm-edge run`` checks it at start; a camera the config
    names is opened and read: missing, it is a problem here (the run would wait for it)."""
    from edge_runtime.sources import SourceError, parse_source_uri, preflight

    pairs = [(st.name, st.uri) for st in settings.streams] or [("source", settings.source.uri)]
    for name, uri in pairs:
        if uri is None:
            checks.row("source", "none in the config (lvm-edge run needs --source or --camera)", None)
            continue
        try:
            spec = parse_source_uri(uri)
            if spec.kind == "camera" and spec.path and not Path(spec.path).exists():
                # preflight's own message sends the user here: say what to do instead
                checks.row(name, f"{spec.label}: no such camera (no {spec.path}): {_missing_camera_advice()}", False)
                continue
            spec = preflight(uri)
        except SourceError as err:
            checks.row(name, str(err), False)
            continue
        if spec.kind == "camera":  # the label: a URI's credentials are not printed
            ok, msg = _probe_camera(spec.device) if spec.device is not None else (True, "a camera (not opened here)")
            checks.row(name, f"{spec.label}: {msg}", ok)
        elif spec.kind in ("file", "demo"):
            checks.row(name, f"{spec.label}: {spec.kind}, readable")
        else:
            checks.row(name, f"{spec.label}: {spec.kind} (not contacted)", None)


def _check_packages(checks: Checklist, host) -> None:
    import platform
    from importlib import metadata

    checks.row("python", f"{platform.python_version()} ({platform.machine()}, {platform.system()})")
    for mod, dist in PACKAGES:
        try:
            m = __import__(mod)
            try:
                version = metadata.version(dist) if dist else str(m.__version__)
            except metadata.PackageNotFoundError:
                version = str(getattr(m, "__version__", "installed"))
            if mod == "cuda" and not host.gpu:  # the library alone runs nothing
                checks.row(mod, f"{version} installed, but no GPU found: unused, inference runs on the CPU", None)
            else:
                checks.row(mod, version)
        except ImportError:
            checks.row(mod, "not installed", False if mod in REQUIRED else None)


def _check_accelerators(checks: Checklist, host) -> None:
    checks.row("ORT providers", ", ".join(host.providers) or "none", bool(host.providers))
    checks.row("TensorRT", host.tensorrt or "not installed (ONNX Runtime will be used)",
               None if not host.tensorrt else True)
    checks.row("GPU", f"{host.gpu} (compute {host.compute_capability})" if host.gpu else "none found", None)
    checks.row("JetPack / L4T", host.jetpack or "not a Jetson", None)


def _check_int8(checks: Checklist) -> None:
    """Whether signed INT8 (S8S8) graphs are exact on this CPU, and what the runtime does if not."""
    try:
        from edge_runtime.backends.onnxruntime import int8_doctor_row
    except ImportError as err:  # no onnxruntime: its row above already says so
        checks.row("INT8 on ORT CPU", f"not checked ({err})", None)
        return
    checks.row(*int8_doctor_row())


def _missing_camera_advice() -> str:
    """What to do about a camera device that is not there, naming the ones that are."""
    there = sorted(str(n) for n in Path("/dev").glob("video*"))
    return ("plug it in (ls /dev/video* lists the cameras), or point the config's source at "
            + (f"one that is there ({', '.join(there)})" if there else "a camera that is there")
            + ", a video file or demo://checkout?seed=N")


def _check_cameras(checks: Checklist, camera: int | None) -> None:
    nodes = sorted(Path("/dev").glob("video*"))
    if camera is not None:
        ok, msg = _probe_camera(camera)
        checks.row(f"camera {camera}", msg, ok)
    elif nodes:
        ok, msg = _probe_camera(int(nodes[0].name[5:]) if nodes[0].name[5:].isdigit() else 0)
        checks.row("cameras", f"{', '.join(n.name for n in nodes)}; first: {msg}", ok)
    else:
        checks.row("cameras", "no /dev/video* (use --source FILE or demo://checkout)", None)


def _check_bundles(checks: Checklist, bundle_arg: str | None, host) -> list:
    """One row a bundle (the one given, else each in engines/); -> those that load."""
    from edge_runtime.backends.bundle import BundleError, load_bundle
    from edge_runtime.backends.host import choose_backend
    from edge_runtime.memory.ood import OOD_UNUSABLE, ood_from_bundle

    # ./engines first: an installed package has no repository around it
    engines = next((d for d in (Path.cwd() / "engines", REPO_ROOT / "engines") if d.is_dir()), Path.cwd() / "engines")
    bundles = [Path(bundle_arg)] if bundle_arg else sorted(p.parent for p in engines.glob("*/manifest.json"))
    if not bundles:
        checks.row("bundles", f"none in {engines} (export one with lvm-export)", None)
    loaded = []
    for b in bundles:
        try:
            bundle = load_bundle(resolve_path(b))
            backend, note = choose_backend(bundle, "auto", host)
            checks.row(f"bundle {bundle.path.name}",
                       f"{bundle.model} {bundle.precision} -> {backend}" + (f" ({note})" if note else ""))
            loaded.append(bundle)
            _, why = ood_from_bundle(bundle)
            if why and why.startswith(OOD_UNUSABLE):  # a damaged file: the flag is off until a re-export
                checks.row(f"ood {bundle.path.name}", f"{why}: the unlike-training-footage flag is off; "
                           f"re-export the bundle", False)
        except BundleError as err:
            checks.row(f"bundle {b if bundle_arg else Path(b).name}", str(err), False)
    return loaded


def _check_snapshots(checks: Checklist, sd: Path, bundles: list) -> None:
    """Each snapshot as a start would read it (``bundles``: the bundle given, else none): a damaged one,
    or one of another bundle, is set aside then and its memory lost; one without the timeline track a
    bundle keeps is refused (the start exits). Memories set aside at earlier starts are listed."""
    from edge_runtime.engine.snapshot import SNAPSHOT_NAME, SnapshotError, read_snapshot
    from edge_runtime.memory.timeline import KEY as TIMELINE_KEY

    bundle_ids = [b.bundle_id for b in bundles]
    keeps_timeline = any(b.timeline is not None for b in bundles)

    for path in [sd / SNAPSHOT_NAME, *sorted(sd.glob(f"streams/*/{SNAPSHOT_NAME}"))]:
        if not path.is_file():
            continue
        name = "snapshot" if path.parent == sd else f"snapshot {path.parent.name}"
        try:
            arrays, meta = read_snapshot(path)
        except SnapshotError as err:
            checks.row(name, f"{err}: the next start sets it aside and starts empty", False)
            continue
        cov = meta.get("coverage") or {}
        held = "empty" if cov.get("start") is None else f"{cov['start']:.0f}-{cov['end']:.0f} s"
        other = bundle_ids and meta.get("bundle_id") not in bundle_ids
        no_track = not other and keeps_timeline and not any(k.startswith(TIMELINE_KEY) for k in arrays)
        checks.row(name, f"{held} of {meta.get('source', 'its source')}" + (
            f"; for bundle {meta.get('bundle_id')}, not this one: the next start sets it aside" if other else
            "; holds no timeline (written with a bundle without the track), and this bundle keeps one: the "
            "next start refuses it (run the bundle that wrote it, or set it aside with --reset-state)" if no_track
            else ""), not (other or no_track))
    kept = sorted(sd.rglob("*"))  # one walk for both kinds of file set aside
    aside = [p.name for p in kept if ".corrupt-" in p.name]
    if aside:
        checks.row("set aside", f"{len(aside)} damaged file(s) kept from earlier starts: {', '.join(aside[:3])}"
                   + (" ..." if len(aside) > 3 else ""), None)
    parked = [p.relative_to(sd) for p in kept if p.name.startswith(f"{SNAPSHOT_NAME}.other-bundle-")]
    if parked:  # a bundle upgrade set these memories aside: renamed back, the bundle that wrote them restores them
        checks.row("set aside", f"{len(parked)} memory(ies) of another bundle kept from earlier starts: "
                   f"{', '.join(map(str, parked[:3]))}{' ...' if len(parked) > 3 else ''} (to go on with one: "
                   f"rename it to {SNAPSHOT_NAME} and run the bundle that wrote it)", None)


def _check_state_dir(checks: Checklist, sd: Path) -> None:
    from edge_runtime.engine.snapshot import SNAPSHOT_NAME

    if not sd.exists():  # the doctor looks, it creates nothing: can the runtime make the folder?
        parent = next((p for p in sd.absolute().parents if p.exists()), None)
        ok = parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
        checks.row("state dir", f"{sd} does not exist yet; "
                   + (f"the runtime can create it ({parent} is writable)" if ok else f"{parent} is not writable"), ok)
        return
    try:
        check_state_dir(sd)
    except CliError as err:
        checks.row("state dir", str(err), False)
        return
    import shutil

    snaps = [p.stat().st_size for p in [sd / SNAPSHOT_NAME, *sd.glob(f"streams/*/{SNAPSHOT_NAME}")] if p.is_file()]
    # a snapshot is written beside the old one, then renamed over it: each stream needs its size twice
    # (an lvm-tiny stream's is about 4 MB), and the alert outbox and catalog a little more
    need = 2 * (sum(snaps) or 4_000_000) + 16_000_000
    free = shutil.disk_usage(sd).free
    held = f"; {len(snaps)} snapshot(s), {sum(snaps) / 1e6:.1f} MB" if snaps else ""
    checks.row("state dir", f"{sd} writable{held}; {free / 1e6:.0f} MB free"
               + ("" if free >= need else f", under the {need / 1e6:.0f} MB the snapshots need to be written"),
               free >= need)


def _probe_camera(index: int, timeout_s: float = 3.0) -> tuple[bool, str]:
    """Open the camera and read one frame, on a thread: a wedged V4L2 driver can block forever."""
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
