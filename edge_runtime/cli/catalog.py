"""``lvm-edge catalog``: the product catalog of a running ``lvm-edge run``, over its HTTP API.

    lvm-edge catalog add "oat milk 1l" front.png side.jpg    # adds, or replaces that product's pictures
    lvm-edge catalog list
    lvm-edge catalog remove "oat milk 1l"

Queries then name the product instead of sending a picture: ``lvm-edge query activity --product
"oat milk 1l" --start 0 --end 300``.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.http_client import request_json
from edge_runtime.cli.query import show


def cmd_catalog(args) -> int:
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1/catalog"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.action in ("add", "remove") and not (args.name or "").strip():
        raise CliError(f"catalog {args.action}: give the product's name (quote it if it has spaces)")
    if args.action == "add":
        if not args.images:
            raise CliError("catalog add: give the product's name and at least one picture (PNG or JPEG file)")
        body = {"name": args.name, "images": [_read_image(p) for p in args.images]}
        try:
            entry = request_json("POST", base, body, token)
        except CliError as err:  # the API names a picture by its index; the user gave files
            raise CliError(re.sub(r"\bimages\.(\d+)\b", lambda m: _file_of(args.images, m), str(err)),
                           err.code) from None
        if args.json:
            print(json.dumps(entry, indent=2))
        else:
            verb = "replaced" if entry.get("replaced") else "added"
            print(f"{verb} '{entry['name']}' ({_pictures(entry['crops'])})")
        return 0
    if args.action == "remove":
        if args.images:
            raise CliError("catalog remove: takes only the product's name")
        gone = request_json("DELETE", f"{base}/{quote(args.name, safe='')}", None, token)
        print(json.dumps(gone, indent=2) if args.json else f"removed '{gone['removed']}'")
        return 0
    if args.name is not None:
        raise CliError("catalog list: takes no name")
    return show(request_json("GET", base, None, token), args.json, _product_lines)


def _product_lines(listing: dict) -> list[str]:
    products = listing.get("products", [])
    if not products:
        return ["the catalog is empty (lvm-edge catalog add NAME PICTURE...)"]
    width = max(len(p["name"]) for p in products)
    return [f"{p['name']:<{width}}  {_pictures(p['crops'])}  {' '.join(f'{w}x{h}' for w, h in p['sizes'])}  "
            f"added {p['added']}" for p in products]


def _file_of(files: list[str], m: re.Match) -> str:
    i = int(m.group(1))
    return files[i] if i < len(files) else m.group(0)


def _pictures(n: int) -> str:
    return f"{n} picture" + ("" if n == 1 else "s")


def _read_image(path: str) -> str:
    try:
        return base64.b64encode(Path(path).read_bytes()).decode()
    except OSError as err:
        raise CliError(f"{path}: {err.strerror or err}") from None
