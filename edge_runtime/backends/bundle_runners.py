"""A bundle's graphs opened on a backend: TensorRT plans where the host can run them, else ONNX
Runtime. A plan that is missing, stale or refused falls back to ONNX Runtime with a note, unless
TensorRT was asked for by name (then the reason is the error). A bundle with the memory reader also
opens its "reader" and "answer" graphs; they have no plans and run on ONNX Runtime on every host."""
from __future__ import annotations

from edge_runtime.backends import BackendError, CacheMiss, Runner, onnxruntime_runner, tensorrt_runner
from edge_runtime.backends.bundle import Bundle, BundleError, verify_files
from edge_runtime.backends.host import choose_backend


def _make(bundle: Bundle, backend: str, threads: int | None) -> dict[str, Runner]:
    runners = {}
    for name, g in bundle.graphs.items():
        if backend == "tensorrt" and g.plan:
            runners[name] = tensorrt_runner(g.plan_path, name, g.inputs, g.outputs)
        else:
            runners[name] = onnxruntime_runner(g.onnx, name, g.inputs, g.outputs, threads=threads)
    return runners


def _activate(runners: dict[str, Runner]) -> None:
    """All or none: a runner that fails to activate releases the others."""
    try:
        for r in runners.values():
            r.activate()
    except Exception:
        for r in runners.values():
            r.deactivate()
        raise


def open_runners(bundle: Bundle, requested: str, threads: int | None) -> tuple[dict[str, Runner], str, list[str]]:
    """-> (active runners by graph name, the backend they run on, notes for the log)."""
    backend, note = choose_backend(bundle, requested)
    notes = [note] if note else []
    if backend == "tensorrt":
        try:
            verify_files(bundle, plans=True)
            runners = _make(bundle, "tensorrt", threads)
            _activate(runners)
            return runners, backend, notes
        except (BackendError, BundleError) as err:
            if requested == "tensorrt":
                raise BundleError(str(err)) from None
            kind = "cache miss" if isinstance(err, CacheMiss) else "unusable"
            notes.append(f"TensorRT plan {kind}: {err}; falling back to ONNX Runtime")
            backend = "onnxruntime"
    runners = _make(bundle, "onnxruntime", threads)
    try:
        _activate(runners)
    except BackendError as err:
        raise BundleError(str(err)) from None
    return runners, backend, notes
