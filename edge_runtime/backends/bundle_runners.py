"""A bundle's graphs opened on a backend: TensorRT plans where the host can run them, else ONNX
Runtime. A plan that is missing, stale or refused falls back to ONNX Runtime with a note, unless
TensorRT was asked for by name (then the reason is the error). A bundle with the memory reader also
opens its "reader" and "answer" graphs; they have no plans and run on ONNX Runtime on every host. A
bundle with the event head adds an "event_head" runner (ONNX Runtime) that opens its session on its
first call: a runtime that never runs the event path never loads it."""
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


class LazyRunner(Runner):
    """A runner whose graph is loaded on the first ``infer``, not on ``activate``."""

    def __init__(self, inner: Runner) -> None:
        super().__init__(inner.name, list(inner.inputs.values()), list(inner.outputs.values()))
        self.inner = inner
        self.backend = inner.backend

    def _activate(self) -> None:
        pass  # the inner runner activates on the first call

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feed, outputs):
        return self.inner.activate().infer(feed, outputs)


def _with_event_head(bundle: Bundle, runners: dict[str, Runner], threads: int | None) -> dict[str, Runner]:
    g = bundle.event_head
    if g is not None:
        runners["event_head"] = LazyRunner(onnxruntime_runner(g.onnx, g.name, g.inputs, g.outputs, threads=threads))
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
            runners = _with_event_head(bundle, _make(bundle, "tensorrt", threads), threads)
            _activate(runners)
            return runners, backend, notes
        except (BackendError, BundleError) as err:
            if requested == "tensorrt":
                raise BundleError(str(err)) from None
            kind = "cache miss" if isinstance(err, CacheMiss) else "unusable"
            notes.append(f"TensorRT plan {kind}: {err}; falling back to ONNX Runtime")
            backend = "onnxruntime"
    runners = _with_event_head(bundle, _make(bundle, "onnxruntime", threads), threads)
    try:
        _activate(runners)
    except BackendError as err:
        raise BundleError(str(err)) from None
    return runners, backend, notes
