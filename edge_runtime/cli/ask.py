"""``lvm-edge ask "..."``: a question in plain words to a running ``lvm-edge run`` (POST /v1/ask);
prints how it was read, then the answer (the events, for a question that names no product)."""
from __future__ import annotations

import json
import os

from edge_runtime.cli.answer_text import answer_text
from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.happened import event_line, lines as happened_lines
from edge_runtime.cli.http_client import request_json


def cmd_ask(args) -> int:
    text = " ".join(args.question).strip()
    if not text:
        raise CliError('ask: give the question, e.g. lvm-edge ask "when was the oat milk bagged in the last 10 minutes?"')
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    body = {"text": text, **({"stream": args.stream} if args.stream else {})}
    reply = request_json("POST", base + "/v1/ask", body, args.token or os.environ.get("LVM_EDGE_TOKEN"))
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"read as: {reply['understood']}")
    print(f"         {json.dumps(reply['read_as'])}")
    if reply["read_as"].get("type") == "happened":
        print("\n".join(happened_lines(reply["answer"])))
        return 0
    print(answer_text(reply["answer"], all_boxes=args.boxes))
    if reply.get("events") is not None:  # an object question ("which items were bagged?") also lists them
        events = reply["events"]
        print(f"{len(events)} event(s) of '{reply['read_as']['activity']}' in the window (what happened):")
        print("\n".join(event_line(ev) for ev in events) if events else "  none found")
    return 0
