"""``lvm-edge query``: the HTTP client side, asking a running ``lvm-edge run`` and printing its answer."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from edge_runtime.cli.answer_text import answer_text
from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.http_client import request_json
from edge_runtime.query.types import BY_NAME


def cmd_query(args) -> int:
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.kind == "status":
        where = f"?stream={quote(args.stream, safe='')}" if args.stream else ""
        print(json.dumps(request_json("GET", base + "/v1/status" + where, None, token), indent=2))
        return 0
    if args.start is None or args.end is None:
        raise CliError(f"query {args.kind}: --start and --end are required (stream seconds)")
    body: dict[str, Any] = {"start": args.start, "end": args.end}
    if args.stream:
        body["stream"] = args.stream
    row = BY_NAME[args.kind]
    if row.takes_object:
        if bool(args.image) == bool(args.product):
            raise CliError(f"query {args.kind}: give one of --image PATH (the object's picture) or --product NAME "
                           f"(a catalog product)")
        if args.product:
            body["product"] = args.product
        else:
            body["object_image"] = _image_b64(args.image)
    if row.takes_activity:
        if args.activity is None:
            raise CliError(f"query {args.kind}: --activity NAME|ID is required")
        body["activity"] = int(args.activity) if args.activity.isdigit() else args.activity
    body.update({opt: getattr(args, opt) for opt in row.options if getattr(args, opt)})
    answer = request_json("POST", f"{base}/v1/query/{args.kind}", body, token)
    print(json.dumps(answer, indent=2) if args.json else answer_text(answer, all_boxes=args.boxes))
    return 0


def show(reply: dict, as_json: bool, lines: Callable[[dict], list[str]]) -> int:
    """Print a reply of the API as its JSON, or as the lines people read."""
    print(json.dumps(reply, indent=2) if as_json else "\n".join(lines(reply)))
    return 0


def _image_b64(path: str) -> str:
    p = Path(path)
    try:
        return base64.b64encode(p.read_bytes()).decode()
    except OSError as err:
        raise CliError(f"--image {path}: {err.strerror}") from None
