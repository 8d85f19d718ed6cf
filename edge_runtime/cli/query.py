"""``lvm-edge query``: the HTTP client side, asking a running ``lvm-edge run`` and printing its answer."""
from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from edge_runtime.cli.answer_text import answer_text
from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.query.types import BY_NAME


def cmd_query(args) -> int:
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.kind == "status":
        where = f"?stream={quote(args.stream, safe='')}" if args.stream else ""
        print(json.dumps(_http("GET", base + "/v1/status" + where, None, token), indent=2))
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
    answer = _http("POST", f"{base}/v1/query/{args.kind}", body, token)
    print(json.dumps(answer, indent=2) if args.json else answer_text(answer, all_boxes=args.boxes))
    return 0


def show(reply: dict, as_json: bool, lines: Callable[[dict], list[str]]) -> int:
    """Print a reply of the API as its JSON, or as the lines people read."""
    print(json.dumps(reply, indent=2) if as_json else "\n".join(lines(reply)))
    return 0


def _http(method: str, url: str, body: dict | None, token: str | None, timeout: float = 60.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            msg = json.loads(err.read()).get("error")
        except Exception:  # a body that is not our JSON error: fall back to the HTTP reason
            msg = None
        raise CliError(f"{url}: HTTP {err.code}: {msg or err.reason}", 1) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if data is not None and len(data) > (1 << 20) and isinstance(reason, (ConnectionResetError, BrokenPipeError)):
            # the runtime refuses a body over its cap before reading it, and closes the connection under it
            raise CliError(f"{url}: the runtime closed the connection while {len(data) / 1e6:.1f} MB were being "
                           f"sent: over its request size limit (8 MB unless its api.max_body_bytes says "
                           f"otherwise); send smaller pictures", 1) from None
        raise CliError(f"{url}: cannot reach the runtime ({reason})", 1) from None


def _image_b64(path: str) -> str:
    p = Path(path)
    try:
        return base64.b64encode(p.read_bytes()).decode()
    except OSError as err:
        raise CliError(f"--image {path}: {err.strerror}") from None
