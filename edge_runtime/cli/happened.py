"""``lvm-edge happened``: what happened in a window of a running ``lvm-edge run`` (POST /v1/happened),
one line per event."""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from edge_runtime.cli.answer_text import coverage_text
from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.http_client import request_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    """'300', '90s', '5m', '1.5h' -> seconds (CliError, one line, for anything else)."""
    m = _DURATION.match(str(text))
    value = float(m.group(1)) * _UNIT_S[(m.group(2) or "").lower() or None] if m else 0.0
    if not m or value <= 0:
        raise CliError(f"--last {text!r}: expected a positive duration such as 300, 90s, 5m or 1h")
    return value


def event_line(ev: dict[str, Any]) -> str:
    box = "" if ev.get("box") is None else "  box [" + " ".join(f"{v:.2f}" for v in ev["box"]) + "]"
    item = "" if ev.get("item") is None else f"  item {ev['item']}"
    return (f"  {ev['start']:8.1f}-{ev['end']:<8.1f} {ev['activity']:<10} {ev['product']:<20} "
            f"confidence {ev['confidence']:.2f}{box}{item}")


def lines(reply: dict[str, Any]) -> list[str]:
    s, e = reply["window"]
    cov = reply.get("coverage") or {}
    if reply.get("status") == "no_memory":
        held = f" ({reply['message']})" if reply.get("message") else ""
        return [f"{reply['stream']}: nothing in memory for {s:.1f}-{e:.1f} s: nothing known about it{held}"]
    part = f"; {coverage_text(reply)}" if reply.get("status") == "partial" and cov.get("start") is not None else ""
    head = (f"{reply['stream']}: {len(reply['events'])} event(s) in {s:.1f}-{e:.1f} s{part} "
            f"({reply['products']['asked']} products asked, from the {reply['products']['from']}"
            + (f"; read from {', '.join(reply['read_from'])}" if reply.get("read_from") else "") + ")")
    out = [head, *(event_line(ev) for ev in reply["events"])]
    if (reply.get("ood") or {}).get("flag"):
        out.append("warning: the recent frames look unlike the training footage; these events may be wrong")
    return out


def cmd_happened(args) -> int:
    if args.last is not None and (args.start is not None or args.end is not None):
        raise CliError("happened: give --last, or --start and --end, not both")
    if (args.start is None) != (args.end is None):
        raise CliError("happened: --start and --end go together (stream seconds)")
    if args.start is not None and not (math.isfinite(args.start) and math.isfinite(args.end)):
        raise CliError("happened: --start and --end must be numbers (stream seconds)")
    if args.start is not None and not args.end > args.start:
        raise CliError(f"happened: --start ({args.start:g}) must be before --end ({args.end:g})")
    body: dict[str, Any] = {}
    if args.start is not None:
        body.update(start=args.start, end=args.end)
    elif args.last is not None:
        body["last"] = seconds(args.last)
    if args.activity is not None:
        body["activity"] = int(args.activity) if args.activity.isdigit() else args.activity
    if args.min_confidence is not None:
        body["min_confidence"] = args.min_confidence
    if args.stream:
        body["stream"] = args.stream
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    reply = request_json("POST", base + "/v1/happened", body, args.token or os.environ.get("LVM_EDGE_TOKEN"))
    print(json.dumps(reply, indent=2) if args.json else "\n".join(lines(reply)))
    return 0
