"""``lvm-edge catalog``: the product catalog of a running ``lvm-edge run``, over its HTTP API.

    lvm-edge catalog add "oat milk 1l" front.png side.jpg    # adds, or replaces that product's pictures
    lvm-edge catalog list
    lvm-edge catalog remove "oat milk 1l"

Queries then name the product instead of sending a picture: ``lvm-edge query activity --product
"oat milk 1l" --start 0 --end 300``. A PICTURE may be a folder: its PNG and JPEG files.

With ``--state-dir DIR`` the catalog kept in DIR is changed directly, with no runtime running (a kiosk
whose camera is not there yet); the runtime started on DIR answers by it.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from edge_runtime.cli.common import CliError, check_state_dir, parse_hostport, say
from edge_runtime.cli.http_client import request_json
from edge_runtime.cli.query import show


def cmd_catalog(args) -> int:
    if args.action in ("add", "remove") and not (args.name or "").strip():
        raise CliError(f"catalog {args.action}: give the product's name (quote it if it has spaces)")
    if args.action == "add" and not args.images:
        raise CliError("catalog add: give the product's name and at least one picture (PNG or JPEG file, or a "
                       "folder of them)")
    if args.action == "remove" and args.images:
        raise CliError("catalog remove: takes only the product's name")
    if args.action == "list" and args.name is not None:
        raise CliError("catalog list: takes no name")
    files = picture_files(args.images) if args.action == "add" else []
    if args.state_dir is not None:
        return _in_state_dir(args, files)
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1/catalog"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.action == "add":
        body = {"name": args.name, "images": [_read_image(p) for p in files]}
        try:
            entry = request_json("POST", base, body, token)
        except CliError as err:  # the API names a picture by its index; the user gave files
            raise CliError(re.sub(r"\bimages\.(\d+)\b", lambda m: _file_of(files, m), str(err)),
                           err.code) from None
        if args.json:
            print(json.dumps(entry, indent=2))
        else:
            verb = "replaced" if entry.get("replaced") else "added"
            print(f"{verb} '{entry['name']}' ({_pictures(entry['crops'])})")
        return 0
    if args.action == "remove":
        gone = request_json("DELETE", f"{base}/{quote(args.name, safe='')}", None, token)
        print(json.dumps(gone, indent=2) if args.json else f"removed '{gone['removed']}'")
        return 0
    return show(request_json("GET", base, None, token), args.json, _product_lines)


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def picture_files(paths: list[str]) -> list[str]:
    """The picture files given: a file as it is, a folder as its PNG and JPEG files (a folder of crops)."""
    out: list[str] = []
    for p in paths:
        folder = Path(p)
        if not folder.is_dir():
            out.append(p)
            continue
        found = sorted(str(f) for f in folder.iterdir() if f.is_file() and f.suffix.lower() in PICTURE_SUFFIXES)
        if not found:
            raise CliError(f"{p}: a folder with no PNG or JPEG files")
        out += found
    return out


def _in_state_dir(args, files: list[str]) -> int:
    """--state-dir: the catalog kept in that folder, changed with no runtime running. A runtime running
    on it holds the catalog in memory and would write over the change: it is refused then."""
    from edge_runtime.query.catalog import Catalog, CatalogError
    from edge_runtime.serve.api_errors import ApiError
    from edge_runtime.serve.api_images import decode_image
    from edge_runtime.serve.state_lock import StateDirBusy, lock_state_dir

    sd = Path(args.state_dir)
    if args.action == "add":
        check_state_dir(sd)  # created if missing, as `lvm-edge run --state-dir` would
    elif not sd.is_dir():
        raise CliError(f"--state-dir {sd}: no such folder")
    try:
        held = lock_state_dir(sd, holder="lvm-edge catalog")
    except StateDirBusy:
        raise CliError(f"--state-dir {sd}: a runtime is running on it; change its catalog through the runtime "
                       f"(the same command without --state-dir)", 1) from None
    except OSError as err:
        raise CliError(f"--state-dir {sd}: {err.strerror or err}") from None
    try:
        catalog = Catalog(sd, warn=say)
        if args.action == "list":
            return show({"products": catalog.entries(), "limits": catalog.limits()}, args.json, _product_lines)
        if args.action == "remove":
            catalog.remove(args.name)
            print(json.dumps({"removed": args.name}, indent=2) if args.json else f"removed '{args.name}'")
            return 0
        try:
            images = [decode_image(_read_image(p), p, catalog.max_pixels) for p in files]
        except ApiError as err:
            raise CliError(err.message) from None
        entry = catalog.add(args.name, images)
    except CatalogError as err:  # the catalog names a picture by its index; the user gave files
        raise CliError(re.sub(r"\bpicture (\d+)\b", lambda m: _file_of(files, m), str(err)), 1) from None
    finally:
        held.close()
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        verb = "replaced" if entry.get("replaced") else "added"
        print(f"{verb} '{entry['name']}' ({_pictures(entry['crops'])}) in {sd}; a runtime started with "
              f"--state-dir {sd} answers about it")
    return 0


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
