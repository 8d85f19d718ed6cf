"""What every ``lvm-edge`` command shares: the one-line error, messages on stderr, paths, HOST:PORT,
and opening the runtime settings and the engine."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PROG = "lvm-edge"


class CliError(Exception):
    """One line for the user, and an exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def resolve_path(p: str | Path) -> Path:
    """As given if it exists (or is absolute), else relative to the repository."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


def parse_hostport(text: str, default_port: int = 8321) -> tuple[str, int]:
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
        number = int(port) if port else default_port
    except ValueError:
        raise CliError(f"--api {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise CliError(f"--api {text!r}: the port must be 0..65535 (0: any free port)")
    return host or "127.0.0.1", number


def check_state_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CliError(f"--state-dir {path}: not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CliError(f"--state-dir {path}: not writable ({err.strerror})") from None


# the runtime config key each command-line flag overrides (a bad value is named by its flag)
FLAG_OF = {"bundle": "--bundle", "backend": "--backend", "threads": "--threads", "duration_s": "--duration",
           "source.realtime": "--realtime", "state.dir": "--state-dir", "state.snapshot_every_s": "--snapshot-every",
           "answers": "--answers", "demo.seed": "--seed", "demo.duration_s": "--duration", "demo.queries": "--queries"}


def load_settings(args, overrides: dict[str, Any]):
    """The runtime config named by ``--config`` (or the default), with the flags given applied."""
    from pydantic import ValidationError

    from edge_runtime.config import ConfigError
    from edge_runtime.cli.runtime_config import load_runtime_settings, override

    try:
        s = load_runtime_settings(resolve_path(args.config) if args.config else None)
        return override(s, overrides)
    except ConfigError as err:
        raise CliError(str(err)) from None
    except ValidationError as err:  # a flag's value the config's schema refuses: one line, naming the flag
        e = err.errors()[0]
        key = ".".join(str(p) for p in e.get("loc", ()))
        raise CliError(f"{FLAG_OF.get(key, key)} {e.get('input')!r}: {e.get('msg', 'invalid').lower()}") from None


def open_engine(bundle: str, backend: str, threads: int | None, answers: str = "auto", event_fps: float | None = None,
                events: bool = True):
    """The engine on ``bundle``; ``answers``: "auto" (the reader when the bundle has one), "reader", "heads";
    ``event_fps``: the event path's rate instead of the bundle's; ``events`` False: the event head unused."""
    from edge_runtime.backends.bundle import BundleError
    from edge_runtime.engine.engine import Engine

    path = resolve_path(bundle)
    try:
        eng = Engine(path, backend=backend, threads=threads, answers=answers, event_fps=event_fps, events=events)
    except BundleError as err:
        raise CliError(str(err)) from None
    for note in eng.notes:
        say(note)
    return eng
