"""``lvm-edge streams``: the camera streams of a running ``lvm-edge run``, over its HTTP API.

    lvm-edge streams                                   # list: one line per stream
    lvm-edge streams add cam2 rtsp://10.0.0.12/stream  # add and start one
    lvm-edge streams remove cam2                       # stop it (final snapshot) and forget it

Queries then name the stream: ``lvm-edge query status --stream cam2``, ``lvm-edge ask "..." --stream cam2``.
"""
from __future__ import annotations

import json
import os
from urllib.parse import quote

from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.http_client import request_json
from edge_runtime.cli.query import show


def cmd_streams(args) -> int:
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1/streams"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.action == "add":
        if not args.name or not args.uri:
            raise CliError("streams add: give the stream's name and its source, e.g. streams add cam2 rtsp://host/path")
        body = {"name": args.name, "source": args.uri, "realtime": bool(args.realtime), "duration": args.duration}
        st = request_json("POST", base, body, token)
        print(json.dumps(st, indent=2) if args.json else f"added {st['stream']} ({st['source']}): {st['state']}")
        return 0
    if args.action == "remove":
        if not args.name:
            raise CliError("streams remove: give the stream's name (lvm-edge streams lists them)")
        if args.uri:
            raise CliError("streams remove: takes only the stream's name")
        gone = request_json("DELETE", f"{base}/{quote(args.name, safe='')}", None, token)
        if args.json:
            print(json.dumps(gone, indent=2))
        else:
            kept = f"; snapshot {gone['snapshot']}" if gone.get("snapshot") else ""
            print(f"removed {gone['removed']} ({gone['frames_processed']} frames{kept})")
        return 0
    if args.name or args.uri:
        raise CliError("streams list: takes no name")
    return show(request_json("GET", base, None, token), args.json,
                lambda listing: stream_lines(listing.get("streams", [])) or ["no streams (lvm-edge streams add NAME URI)"])


def stream_lines(streams: list[dict]) -> list[str]:
    """One aligned line per stream: name (* the default), state, coverage, frames, fps, source, error."""
    width = max((len(s["name"]) for s in streams), default=0)
    out = []
    for s in streams:
        cov = s.get("coverage") or {}
        span = f"{cov['start']:.0f}-{cov['end']:.0f} s" if cov.get("start") is not None else "empty"
        mark = "*" if s.get("default") else " "
        line = (f"{s['name']:<{width}}{mark} {s['state']:<12} {span:<14} {s['frames_processed']:>7} frames  "
                f"{s['fps']:6.1f} fps  {s.get('source') or '-'}")
        if s.get("error"):
            line += f"  error: {' '.join(str(s['error']).split())}"
        out.append(line)
    return out
