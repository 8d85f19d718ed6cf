"""Writing a bundle folder atomically, and its manifest (engines/README.md).

The bundle is built in a hidden temp folder next to the target (same filesystem), the manifest is
written last (temp file, fsync, rename), every file and the folder are fsynced, and only then is
the folder renamed into place. An existing bundle is replaced only after the new one is complete:
on Linux with one atomic exchange (renameat2 RENAME_EXCHANGE), elsewhere with two renames. A
failed or interrupted export leaves at most a hidden ``.NAME.tmp-PID-*`` folder without a valid
name, which the next export of the same target removes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import errno
import json
import os
import platform
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from edge_runtime.atomic_write import atomic_write_bytes, fsync_dir, fsync_file
from edge_runtime.file_hash import sha256_file  # noqa: F401  (one hashing routine for writer and reader)

MANIFEST = "manifest.json"
FORMAT = 1


class BundleWriteError(OSError):
    """The bundle cannot be written where asked; the message is one line."""


def write_json_atomic(path: Path, obj: Any) -> None:
    # 0644 whatever the umask: the runtime may run as another user
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), mode=0o644)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the call is not available."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def check_target(target: Path) -> None:
    """Raise BundleWriteError (one line) when a bundle cannot be written at ``target``."""
    target = Path(os.path.abspath(target))
    if target.exists() and not target.is_dir():
        raise BundleWriteError(f"--out {target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise BundleWriteError(f"--out {target}: exists, is not empty and is not a bundle (no {MANIFEST}); "
                               "refusing to replace it")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BundleWriteError(f"--out {target}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BundleWriteError(f"--out {target}: {parent} is not writable")


class BundleWriter:
    """``with BundleWriter(target) as w: ...write files into w.path...; w.commit(manifest)``.

    Leaving the block without ``commit`` (an exception, an early return) removes the temp folder;
    the target is untouched."""

    def __init__(self, target: str | Path) -> None:
        self.target = Path(os.path.abspath(target))
        self.committed = False
        check_target(self.target)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BundleWriteError(f"--out {self.target}: cannot create {self.target.parent} "
                                   f"({err.strerror or err})") from None
        self._clean_stale()
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-{os.getpid()}-",
                                              dir=self.target.parent))
        except OSError as err:
            raise BundleWriteError(f"--out {self.target}: cannot write in {self.target.parent} "
                                   f"({err.strerror or err})") from None
        os.chmod(self.path, 0o755)  # mkdtemp makes it private; the runtime may run as another user

    def _clean_stale(self) -> None:
        """Temp folders of earlier exports of this target whose process is gone."""
        prefix = f".{self.target.name}."
        for p in self.target.parent.glob(f"{prefix}*-*"):
            rest = p.name[len(prefix):]
            kind, _, tail = rest.partition("-")
            if kind not in ("tmp", "old") or not p.is_dir():
                continue
            pid = tail.split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def write_manifest(self, manifest: dict) -> Path:
        """Write (or rewrite) the manifest inside the temp folder, atomically."""
        write_json_atomic(self.path / MANIFEST, manifest)
        return self.path / MANIFEST

    def commit(self, manifest: dict) -> Path:
        """Manifest last, fsync everything, then move the finished folder into place."""
        for f in self.path.iterdir():
            if f.is_file() and f.name != MANIFEST:
                fsync_file(f)
        self.write_manifest(manifest)
        fsync_dir(self.path)
        parent = self.target.parent
        if self.target.exists():
            if _exchange(self.path, self.target):
                fsync_dir(parent)
                shutil.rmtree(self.path, ignore_errors=True)  # now holds the old bundle
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-{os.getpid()}-", dir=parent))
                os.rmdir(old)
                os.rename(self.target, old)
                try:
                    os.rename(self.path, self.target)
                except OSError:
                    os.rename(old, self.target)
                    raise
                fsync_dir(parent)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.target)
            fsync_dir(parent)
        self.committed = True
        return self.target


# ----------------------------------------------------------------------------------------------
# manifest

def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def tool_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for dist in ("torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "timm", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    try:
        import tensorrt as trt  # noqa: F401

        out["tensorrt"] = str(trt.__version__)
    except Exception:  # not installed (or broken): no plans were built
        out["tensorrt"] = None
    out["python"] = platform.python_version()
    return out


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "machine": platform.machine(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "os": f"{platform.system()} {platform.release()}"}


def labels_for(cfg, trained: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Class names the runtime shows: the ones the checkpoint was trained with; for a checkpoint that
    carries none, the generator's when they fit the model."""
    if trained is not None:
        return {"activities": list(trained["activities"]), "products": list(trained.get("products") or [])}
    try:
        from edge_runtime.checkout import ACTIVITIES, PRODUCTS

        # activity ids are only ever appended: a model with N activities has the generator's first N
        acts, prods = [str(a) for a in ACTIVITIES[: cfg.heads.num_activities]], [str(p) for p in PRODUCTS]
    except ImportError:
        acts, prods = [], []
    if len(acts) != cfg.heads.num_activities:
        acts = [f"activity_{i}" for i in range(cfg.heads.num_activities)]
    return {"activities": acts, "products": prods}


def graph_entry(bundle_dir: Path, name: str, onnx_file: str, signature: dict, *, quantization=None,
                plan=None, precision: str | None = None, fp16: dict | None = None, note: str | None = None) -> dict:
    entry = {"onnx": onnx_file, "sha256": sha256_file(bundle_dir / onnx_file),
             "size_bytes": (bundle_dir / onnx_file).stat().st_size,
             "inputs": signature["inputs"], "outputs": signature["outputs"],
             "precision": precision, "quantization": quantization, "plan": plan}
    if fp16 is not None:
        entry["fp16"] = fp16
    if note:  # why the graph is not at the bundle's precision
        entry["note"] = note
    return entry


def build_manifest(*, cfg, precision: str, checkpoint: dict, graphs: dict, parity: dict, accuracy: Any,
                   calibration: Any, latency: dict | None = None, export: dict | None = None,
                   ood: dict | None = None, answers: dict | None = None, events: dict | None = None) -> dict:
    """``checkpoint``: export_inputs.load_model's section; its "labels" (the trained class names, None
    for a checkpoint without them) become the manifest's top-level "labels". ``answers``: the
    "answers" block (export.onnx.reader_graphs.answers_section); the heads' alone when None. ``events``:
    the event head's block (export.onnx.event_graphs.events_section), written only with its graph."""
    labels = checkpoint.get("labels")
    checkpoint = {k: v for k, v in checkpoint.items() if k != "labels"}
    manifest = {
        "format": FORMAT,
        "model": cfg.name,
        "precision": precision,
        "created": utc_now(),
        "config": cfg.to_dict(),
        "config_sha256": cfg.digest(),
        "checkpoint": checkpoint,
        "labels": labels_for(cfg, labels),
        # what the answers mean beyond the graph contract: object_extent, the heads' object queries'
        # start/end outputs are their track's extent (bundles without the key answer boxes at every
        # frame); kind "reader" with the reader's section when the bundle carries the reader graphs
        "answers": answers or {"object_extent": True, "kind": "heads"},
        "graphs": graphs,
        # training-data statistics for the out-of-distribution signal (absent: the runtime says unknown)
        "ood": ood,
        "parity": parity,
        "accuracy": accuracy,
        "calibration": calibration,
        "latency_cpu": latency,
        "export": export or {},
        "tools": tool_versions(),
        "host": host_info(),
    }
    if events is not None:
        manifest["events"] = events
    return manifest
