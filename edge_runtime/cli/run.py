"""``lvm-edge run``: check the inputs up front, stream the source into memory, serve the API, and on
a signal drain and snapshot before exiting."""
from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

from edge_runtime.cli.common import CliError, check_state_dir, load_settings, open_engine, parse_hostport, say
from edge_runtime.cli.status_line import StatusLine


def cmd_run(args) -> int:
    from edge_runtime.pipeline import RunState, Runtime, SourceMismatch

    s = load_settings(args, {"bundle": args.bundle, "backend": args.backend, "threads": args.threads,
                             "duration_s": args.duration, "source.realtime": args.realtime,
                             "state.dir": args.state_dir, "state.snapshot_every_s": args.snapshot_every})
    uri = str(args.camera) if args.camera is not None else (args.source or s.source.uri)
    if uri is None:
        raise CliError("no source: pass --source URI or --camera N (or set source.uri in --config)")
    serve = not (args.api and args.api.lower() in ("none", "off", "no"))
    # Without --duration a served stream is a service: it answers on after its source ends.
    keep_serving = args.keep_serving if args.keep_serving is not None else (serve and s.duration_s is None)
    if keep_serving and not serve:
        raise CliError("--keep-serving answers queries over the API: drop --api none")
    host, port = parse_hostport(args.api) if (serve and args.api) else (s.api.host, s.api.port)
    token = args.token or os.environ.get(s.api.token_env) or None
    if serve:
        from edge_runtime.api import check_bind

        try:
            check_bind(host, token)
        except ValueError as err:
            raise CliError(str(err)) from None
    preflight_source(uri)
    if s.state.dir:
        check_state_dir(Path(s.state.dir))
        if args.reset_state:
            reset_state(Path(s.state.dir))
    elif args.reset_state:
        raise CliError("--reset-state needs --state-dir (or state.dir in --config)")
    engine = open_engine(s.bundle, s.backend, s.threads)
    runtime = Runtime(engine, state_dir=s.state.dir, snapshot_every=s.state.snapshot_every_s,
                      max_batch=s.api.max_batch, batch_wait_s=s.api.batch_wait_ms / 1000,
                      batch_frames=s.batch_frames, warn=say)
    try:
        runtime.check_source(uri)
    except SourceMismatch as err:
        runtime.close()
        raise CliError(f"--state-dir {s.state.dir}: its snapshot holds the memory of {err.recorded}, but this run's "
                       f"source is {err.requested}; pass --reset-state to set that snapshot aside (renamed, kept) "
                       f"and start empty, or use another --state-dir") from None
    if runtime.restored_from:
        cov = runtime.restored_from["coverage"]
        say(f"restored memory from {runtime.restored_from['path']} (coverage {cov['start']}-{cov['end']} s, "
            f"{runtime.restored_from['frames_processed']} frames)")
    server = server_thread = None
    if serve:
        server, server_thread = _start_api(runtime, s.api, host, port, token)

    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum, _frame):
        if signals:
            say("second signal: exiting without draining")
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
                if runtime.state is RunState.FAILED or not keep_serving:
                    break
                if not end_noted:  # --keep-serving: answer queries on what it remembers
                    status.tick(force=True)
                    say(runtime.error or runtime.end_reason or "the stream ended")
                    say("source ended; still answering queries (Ctrl-C / SIGTERM to stop)")
                    end_noted = True
    finally:
        status.tick(force=True)
        status.done()
        if not end_noted and (runtime.error or runtime.end_reason):
            say(runtime.error or runtime.end_reason)  # why it ended (or failed), once
        if signals:
            say(f"{signal.Signals(signals[0]).name}: draining and snapshotting")
        # a run that failed before its first frame changed nothing: no snapshot to write
        runtime.stop(snapshot=not (runtime.state is RunState.FAILED and runtime.frames_in == 0))
        if runtime.last_snapshot_path is not None and runtime.state_dir is not None:
            say(f"snapshot written to {runtime.last_snapshot_path}")
        if server is not None:
            server.should_exit = True
            server_thread.join(5.0)
        runtime.close()
    # failed, or a file that could not be read to its end; a signal is the normal way to stop
    return 1 if runtime.error and not signals else 0


def reset_state(state_dir: Path) -> None:
    """--reset-state: rename the snapshot aside (it is the user's data: never deleted)."""
    from edge_runtime.snapshot import SNAPSHOT_NAME, set_aside

    path = state_dir / SNAPSHOT_NAME
    if not path.exists():
        say(f"--reset-state: no snapshot in {state_dir}; starting empty")
        return
    try:
        aside = set_aside(path, "reset")
    except OSError as err:
        raise CliError(f"--reset-state: cannot rename {path} ({err.strerror})", 1) from None
    say(f"--reset-state: the old snapshot is kept as {aside}; starting empty")


def _start_api(runtime, api, host: str, port: int, token: str | None):
    """The API on a thread of its own, on a socket bound here so a busy port fails in one line."""
    import uvicorn

    from edge_runtime.api import create_app

    sock = bind(host, port)
    app = create_app(runtime, token=token, max_body_bytes=api.max_body_bytes, max_image_pixels=api.max_image_pixels)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lvm-api", daemon=True)
    server_thread.start()
    real_port = sock.getsockname()[1]
    say(f"API on http://{host}:{real_port} (docs at /docs){' with token' if token else ''}")
    return server, server_thread


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise CliError(f"--api {host}:{port}: cannot resolve host ({err.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family in (socket.AF_INET, socket.AF_INET6):
        # Accepted connections inherit it. Without it the server's loop left Nagle on, and a reply
        # sent as headers then body waited for the client's delayed ACK: 44 ms per kept-alive request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise CliError(f"--api {host}:{port}: cannot listen ({err.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def preflight_source(uri: str) -> None:
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
    if spec.kind == "file":  # opening says what is wrong with the path (missing, a directory,
        # unreadable, empty; frame_%04d.png patterns allowed) and decodes the first frame, once
        from edge_runtime.sources import open_source

        try:
            open_source(uri, target_fps=None).close()
        except SourceError as err:
            raise CliError(str(err)) from None
    if spec.kind == "camera" and spec.path and not os.path.exists(spec.path):
        raise CliError(f"{spec.label}: no such camera (no {spec.path}; see `lvm-edge doctor`)")
