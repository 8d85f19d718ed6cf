"""``lvm-edge``: run the streams + API, ask and query them, watch their alerts, keep the product
catalog, check the host, or run the embedded demo.

    lvm-edge run --camera 0 --state-dir /var/lib/lvm-edge
    lvm-edge run --source demo://checkout?seed=3 --duration 3600 --api 127.0.0.1:8321
    lvm-edge query activity --api 127.0.0.1:8321 --image crop.png --start 0 --end 300
    lvm-edge doctor
    lvm-edge demo

Every failure a user can cause (missing camera, unreadable file, foreign bundle, bad config, busy
port) ends with one line on stderr and a non-zero exit status: 2 for bad input, 1 for a run that
failed, 130 / 143 never (signals drain and snapshot, then exit 0).

One module per subcommand (``run``, ``query``, ``ask``, ``happened``, ``streams``, ``alerts``,
``catalog``, ``doctor``, ``demo``); ``parser`` binds them to the command line, ``common`` holds what
they share, ``answer_text`` the answers as lines, ``status_line`` the progress line of run and demo.
"""
from __future__ import annotations

import logging
import os
import sys

from edge_runtime.cli.common import PROG, REPO_ROOT, CliError, parse_hostport, say
from edge_runtime.cli.demo import ensure_bundle
from edge_runtime.cli.parser import build_parser
from edge_runtime.cli.status_line import StatusLine

__all__ = ["REPO_ROOT", "CliError", "StatusLine", "build_parser", "ensure_bundle", "main", "parse_hostport"]


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.sources.files import quiet_decoder_logs

    quiet_decoder_logs()  # before anything opens a capture (doctor's camera probe, a source)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the embedded default: the demo
        args = parser.parse_args(["demo"] + list(argv or sys.argv[1:]))
    try:
        code = int(args.func(args) or 0)
        if argv is None:  # the process's own entry point, not a caller in the same process
            exit_past_blocked_readers(code)
        return code
    except CliError as err:
        say(str(err))
        return err.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:  # `lvm-edge query ... | head`
        sys.stderr.close()
        return 0


def exit_past_blocked_readers(code: int) -> None:
    """The command is done and has stored and closed everything. A camera or RTSP reader still
    blocked inside OpenCV's open (a peer that accepts and never answers) must not be left to
    interpreter shutdown: when that native call returns during finalisation its thread is unwound
    through C++ frames and the process aborts (SIGABRT instead of the exit code; seen under the RTSP
    watchdog scenarios). Leave at once instead."""
    import threading

    if any(t.is_alive() and t.name.startswith("source:") for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
