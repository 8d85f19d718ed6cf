"""``lvm-edge run``: check the inputs up front, stream the source into memory, serve the API, and on
a signal drain and snapshot before exiting."""
from __future__ import annotations

import gc
import os
import signal
import socket
import threading
from pathlib import Path

from edge_runtime.cli.common import CliError, check_state_dir, load_settings, open_engine, parse_hostport, say
from edge_runtime.cli.status_line import StatusLine


def cmd_run(args) -> int:
    s = load_settings(args, {"bundle": args.bundle, "backend": args.backend, "threads": args.threads,
                             "duration_s": args.duration, "source.realtime": args.realtime,
                             "state.dir": args.state_dir, "state.snapshot_every_s": args.snapshot_every,
                             "answers": args.answers})
    sources = stream_sources(args, s)
    serve = not (args.api and args.api.lower() in ("none", "off", "no"))
    # Without --duration a served stream is a service: it answers on after its source ends.
    keep_serving = args.keep_serving if args.keep_serving is not None else (serve and s.duration_s is None)
    if keep_serving and not serve:
        raise CliError("--keep-serving answers queries over the API: drop --api none")
    host, port = parse_hostport(args.api) if (serve and args.api) else (s.api.host, s.api.port)
    token = args.token or os.environ.get(s.api.token_env) or None
    if serve:
        from edge_runtime.serve.bind import check_bind

        try:
            check_bind(host, token)
        except ValueError as err:
            raise CliError(str(err)) from None
    waiting: set[str | None] = set()   # streams whose camera is not plugged in yet
    for name, uri in sources:
        if name is not None:
            from edge_runtime.serve.streams import StreamError, check_name

            try:
                check_name(name)
            except StreamError as err:
                raise CliError(f"--source {name}={uri}: {err}") from None
        try:
            preflight_source(uri)
        except CliError as err:
            if len(sources) == 1 or not _missing_camera(uri):
                raise
            # one lane's camera unplugged: the other lanes run, this one waits for it
            say(f"{name}: {err}; this stream waits for it (the other streams run)")
            waiting.add(name)
    state_lock = None  # held (open) until this function returns: one runtime per state dir
    if s.state.dir:
        from edge_runtime.serve.state_lock import StateDirBusy, lock_state_dir

        check_state_dir(Path(s.state.dir))
        try:
            state_lock = lock_state_dir(s.state.dir)
        except StateDirBusy as err:
            raise CliError(str(err)) from None
    elif args.reset_state is not None:
        raise CliError("--reset-state needs --state-dir (or state.dir in --config)")
    names = [name or "default" for name, _ in sources]
    unknown = [n for n in args.reset_state or () if n not in names]
    if unknown:
        raise CliError(f"--reset-state {' '.join(unknown)}: no stream of this run is called that (streams: {', '.join(names)})")
    where = f"{args.config}: " if args.config else ""  # the file the alerts: section is in
    try:
        check_alerts(s)
    except CliError as err:
        raise CliError(f"{where}{err}", err.code) from None
    # the inputs are checked: the serving stack loads (a bad flag above exits without waiting for it)
    from edge_runtime.memory.ood import OOD_UNUSABLE, OODMonitor
    from edge_runtime.serve.pipeline import RunState, SourceMismatch
    from edge_runtime.serve.streams import StreamError, Streams

    engine = open_engine(s.bundle, s.backend, s.threads, s.answers, s.event_fps, s.events)
    ood_note = (OODMonitor.for_bundle(engine.bundle).status() or {}).get("note") or ""
    if ood_note.startswith(OOD_UNUSABLE):  # said at start, not only in the status: re-export the bundle
        say(f"warning: {engine.bundle.path}: {ood_note}; the unlike-training-footage flag is off")
    if s.alerts.enabled:  # rules the bundle cannot evaluate: refused before any stream's folder is made
        try:
            s.alerts.check_rules(engine.event_activities, names)
            if engine.answers_kind != "reader" and engine.events is None:  # the rules read what happened, which only the reader answers
                raise ValueError(f"alert rules read what happened, which needs the memory reader's answers; this run "
                                 f"answers with the {engine.answers_kind} (drop --answers heads, or the alerts rules)")
        except ValueError as err:
            engine.close()
            raise CliError(where + " ".join(str(err).split())) from None
    hub = Streams(engine, state_dir=s.state.dir, snapshot_every=s.state.snapshot_every_s,
                  max_batch=s.api.max_batch, batch_wait_s=s.api.batch_wait_ms / 1000,
                  batch_frames=s.batch_frames, warn=say)
    try:
        for name, uri in sources:
            if args.reset_state is not None and (not args.reset_state or (name or "default") in args.reset_state):
                reset_state(hub.state_dir_of(name or "default"))
            try:
                runtime = hub.create(name, zones=configured_zones(s, name, len(sources)))
            except StreamError as err:  # a snapshot this run cannot continue (kept as it is)
                raise CliError(str(err)) from None
            try:
                runtime.check_source(uri)
            except SourceMismatch as err:
                where = f"--state-dir {s.state.dir}" + (f" (stream {name})" if name else "")
                raise CliError(f"{where}: its snapshot holds the memory of {err.recorded}, but this run's "
                               f"source is {err.requested}; pass --reset-state{' ' + name if name else ''} to set that snapshot aside (renamed, "
                               f"kept) and start empty, or use another --state-dir") from None
            if runtime.restored_from:
                cov = runtime.restored_from["coverage"]
                held = "empty" if cov["start"] is None else f"coverage {cov['start']:.1f}-{cov['end']:.1f} s"
                who = f"{runtime.name}: " if len(sources) > 1 else ""  # the hub holds only the streams made so far
                say(f"{who}restored memory from {runtime.restored_from['path']} ({held}, "
                    f"{runtime.restored_from['frames_processed']} frames)")
        note_streams_left_out(hub, [name or "default" for name, _ in sources])
        hub.alerts = open_alerts(s, hub)
        if hub.alerts is not None and hub.alerts.pos is not None and not serve:
            say("alerts: warning: alerts.scans is pos but --api none: no till can send its scans here "
                "(demo:// streams bring their own), so every bag will be judged unscanned")
    except BaseException:
        hub.close()
        raise
    server = server_thread = None
    if serve:
        server, server_thread = _start_api(hub, s.api, host, port, token)

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
    for (name, uri), runtime in zip(sources, hub):
        runtime.start(uri, realtime=s.source.realtime, duration=s.duration_s,
                      source_options={**source_options, **({"wait_for_device": True} if name in waiting else {})})
    status = StatusLine(hub, s.status_every_s)
    noted: set[str] = set()
    try:
        while not stop.wait(min(0.25, s.status_every_s)):
            status.tick()
            if server_thread is not None and not server_thread.is_alive():
                raise CliError("API server stopped unexpectedly", 1)
            done = [rt for rt in hub if not rt.running and rt.wait(0)]
            # --keep-serving: a run whose streams were all removed over the API serves on (one may be added)
            if len(done) == len(hub) and (not keep_serving or (done and all(rt.state is RunState.FAILED for rt in done))):
                break
            if keep_serving and not len(hub) and "-" not in noted:
                say("no streams left; still serving the API (add one: lvm-edge streams add NAME SOURCE)")
                noted.add("-")
            for rt in done:  # one stream ended: the others go on; it still answers from memory
                if rt.name not in noted:
                    noted.add(rt.name)
                    status.tick(force=True)
                    say(f"{rt.name}: removed" if rt.removed else
                        _who(rt, hub) + (rt.error or rt.end_reason or "the stream ended"))
            if keep_serving and len(done) == len(hub) and "*" not in noted:
                say("source ended; still answering queries (Ctrl-C / SIGTERM to stop)")
                noted.add("*")
    finally:
        status.tick(force=True)
        status.done()
        for rt in hub:  # why each ended (or failed), once
            if rt.name not in noted and (rt.error or rt.end_reason):
                say(_who(rt, hub) + (rt.error or rt.end_reason))
        if signals:
            snapshotting = any(rt.state_dir is not None for rt in hub)
            say(f"{signal.Signals(signals[0]).name}: draining{' and snapshotting' if snapshotting else ''}")
        for rt in hub:
            # a run that failed before its first frame changed nothing: no snapshot to write
            rt.stop(snapshot=not (rt.state is RunState.FAILED and rt.frames_in == 0))
            if rt.final_snapshot == "written":
                say(f"{_who(rt, hub)}snapshot written to {rt.last_snapshot_path}")
        lost = [rt for rt in hub if rt.final_snapshot == "failed"]
        if server is not None:
            server.should_exit = True
            server_thread.join(5.0)
        failed = any(rt.error for rt in hub)
        hub.close()
        if state_lock is not None:
            state_lock.close()
    # failed, or a file that could not be read to its end; a signal is the normal way to stop, but not
    # when the final snapshot could not be written: the memory is lost, and systemd should say so
    return 1 if (failed and not signals) or lost else 0


def check_alerts(s) -> None:
    """The alerts: section's start-time checks (the file's own were made when it was read): one line each."""
    a = s.alerts
    if not (a.enabled or a.sink_names()):
        return
    if not s.state.dir:
        raise CliError("alerts need a state directory (--state-dir, or state.dir in --config): their outbox is "
                       "<state dir>/alerts.db")
    try:
        a.check_env()
    except ValueError as err:
        raise CliError(str(err)) from None
    if a.mqtt is not None:
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise CliError("alerts.mqtt needs paho-mqtt: pip install 'paho-mqtt>=2' (part of the runtime extra)") from None


def open_alerts(s, hub):
    """The AlertService of this run, or None when the config has no alert rules and no sinks."""
    a = s.alerts
    if not (a.enabled or a.sink_names()):
        return None
    import sqlite3

    from edge_runtime.alerts.service import AlertService

    try:
        a.check_rules(hub.engine.event_activities, hub.names())
    except ValueError as err:
        raise CliError(" ".join(str(err).split())) from None

    try:
        service = AlertService(a, s.state.dir, registry=hub.metrics.registry, warn=say)
    except (OSError, sqlite3.Error) as err:
        raise CliError(f"alerts: cannot open {Path(s.state.dir) / 'alerts.db'} ({err})", 1) from None
    service.open_lanes(hub.names())
    absent = [name for name in a.streams if name not in hub.names()]
    if absent:  # a typo would change nothing, silently; a lane added later through the API takes them
        say(f"alerts: warning: alerts.streams names {', '.join(absent)}, which no stream of this run is called "
            f"(streams: {', '.join(hub.names())}); those changes apply only to a stream added by that name")
    rules = ", ".join(a.rule_names()) or None
    to = ", ".join(([a.mqtt.url] if a.mqtt else []) + ([f"{len(a.webhooks)} webhook(s)"] if a.webhooks else []))
    till = "; scans from the till (POST /v1/streams/<stream>/scans)" if service.pos is not None else ""
    say(f"alerts: {'rules ' + rules if rules else 'no rules configured'}{till}"
        f"{'; delivering to ' + to if to else ''} (outbox {service.outbox.path})")
    return service


def configured_zones(s, name: str | None, streams: int):
    """A stream's zones in the config (checked when it was read): its ``streams:`` entry's, or
    ``source.zones`` in a run of one stream; None when it gives none."""
    from edge_runtime.items.zones import Zones

    data = next((st.zones for st in s.streams if st.name == name), None)
    if data is None and streams == 1:
        data = s.source.zones
    return Zones.from_dict(data) if data is not None else None


def _who(runtime, hub) -> str:
    """'cam1: ' before a line about one of several streams; nothing when there is one."""
    return f"{runtime.name}: " if len(hub) > 1 else ""


def stream_sources(args, s) -> list[tuple[str | None, str]]:
    """The (name, URI) of each stream: --camera N, --source [NAME=]URI (repeatable), else the
    config's streams: list or source.uri. One unnamed source is the stream 'default';
    among several, an unnamed one is named stream-<position> (stable across restarts)."""
    from edge_runtime.serve.streams import split_named

    if args.camera is not None:
        pairs = [(None, str(args.camera))]
    elif args.source:
        pairs = [split_named(x) for x in args.source]
    elif s.streams:
        pairs = [(st.name, st.uri) for st in s.streams]
    elif s.source.uri is not None:
        pairs = [(None, s.source.uri)]
    else:
        raise CliError("no source: pass --source URI or --camera N (or set source.uri or streams in --config)")
    if len(pairs) > 1:
        pairs = [(name or f"stream-{i + 1}", uri) for i, (name, uri) in enumerate(pairs)]
    names = [n for n, _ in pairs if n is not None]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CliError(f"--source: two streams are named {dup[0]!r}; give each its own NAME=URI")
    return pairs


def note_streams_left_out(hub, names: list[str]) -> None:
    """A stream added over the API, or left out of the config or flags since, is not in this run: name
    the ones whose memory the state dir holds, and how to go on with one."""
    if hub.state_dir is None:
        return
    from edge_runtime.engine.snapshot import SNAPSHOT_NAME

    root = Path(hub.state_dir) / "streams"
    held = sorted(p.parent.name for p in root.glob(f"*/{SNAPSHOT_NAME}")) if root.is_dir() else []
    left = [n for n in held if n not in names]
    if left:
        say(f"{root} also holds the memory of {', '.join(left)}, not in this run (not in its config or "
            f"--source flags: added over the API, or left out since); add one again with its source to go on: "
            f"lvm-edge streams add NAME SOURCE, or name it in the config")
    unnamed = Path(hub.state_dir) / SNAPSHOT_NAME
    if "default" not in names and unnamed.is_file():
        # a kiosk's one stream, unnamed, then run with a name (as in the alerts setup): its memory is
        # kept in another place, and this run's stream of that name starts from its own
        say(f"{unnamed} holds the memory of an unnamed stream, not in this run (its streams are named, each "
            f"with its own under {root}); run that source unnamed (--source URI) to go on with it")


def reset_state(state_dir: Path) -> None:
    """--reset-state: rename the snapshot aside (it is the user's data: never deleted)."""
    from edge_runtime.atomic_write import set_aside
    from edge_runtime.engine.snapshot import SNAPSHOT_NAME

    path = Path(state_dir) / SNAPSHOT_NAME
    if not path.exists():
        say(f"--reset-state: no snapshot in {state_dir}; starting empty")
        return
    try:
        aside = set_aside(path, "reset")
    except OSError as err:
        raise CliError(f"--reset-state: cannot rename {path} ({err.strerror})", 1) from None
    say(f"--reset-state: the old snapshot is kept as {aside}; starting empty")


def _start_api(hub, api, host: str, port: int, token: str | None):
    """The API on a thread of its own, on a socket bound here so a busy port fails in one line."""
    import uvicorn

    from edge_runtime.serve.api import create_app

    sock = bind(host, port)
    # Every answer builds thousands of short-lived lists (boxes, scores) under the GIL the API and the
    # query batcher share: with the youngest generation collected every 700 allocations (the default),
    # 32 clients were served 12 % fewer requests and p99 was 105 ms instead of 84 (tools/reliability)
    gc.set_threshold(20000, 50, 100)
    app = create_app(hub, token=token, max_body_bytes=api.max_body_bytes, max_image_pixels=api.max_image_pixels)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server_thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lvm-api", daemon=True)
    server_thread.start()
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL is bracketed
    say(f"API on http://{shown}:{real_port} (docs at /docs){' with token' if token else ''}")
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


def _missing_camera(uri: str) -> bool:
    from edge_runtime.sources import parse_source_uri

    spec = parse_source_uri(uri)
    return spec.kind == "camera" and bool(spec.path) and not os.path.exists(spec.path)


def preflight_source(uri: str) -> None:
    """Fail fast, in one line, on a URI that cannot work (malformed, missing file or camera)."""
    from edge_runtime.sources import SourceError, preflight

    try:
        preflight(uri)
    except SourceError as err:
        raise CliError(str(err)) from None
