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
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise CliError(f"--api {text!r}: expected HOST:PORT") from None


def check_state_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise CliError(f"--state-dir {path}: not writable ({err.strerror})") from None


def load_settings(args, overrides: dict[str, Any]):
    """The runtime config named by ``--config`` (or the default), with the flags given applied."""
    from edge_runtime.config import ConfigError
    from edge_runtime.runtime_config import load_runtime_settings, override

    try:
        s = load_runtime_settings(resolve_path(args.config) if args.config else None)
        return override(s, overrides)
    except ConfigError as err:
        raise CliError(str(err)) from None
    except ValueError as err:  # pydantic on a bad override
        raise CliError(f"bad option: {' '.join(str(err).split())[:200]}") from None


def open_engine(bundle: str, backend: str, threads: int | None, answers: str = "auto"):
    """The engine on ``bundle``; ``answers``: "auto" (the reader when the bundle has one), "reader", "heads"."""
    from edge_runtime.backends.bundle import BundleError
    from edge_runtime.engine.engine import Engine

    path = resolve_path(bundle)
    try:
        eng = Engine(path, backend=backend, threads=threads, answers=answers)
    except BundleError as err:
        raise CliError(str(err)) from None
    for note in eng.notes:
        say(note)
    return eng
