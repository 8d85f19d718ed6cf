"""A stream's zones as set over the API (the dashboard's editor), kept where a restart finds them:
``<the stream's state dir>/zones.json``. At start the config's zones win over the file; with
neither, the stream proposes its own from the event head's zone map (edge_runtime/items/item_state.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edge_runtime.atomic_write import atomic_write_bytes, fsync_dir, set_aside
from edge_runtime.items.zones import Zones

ZONES_FILE = "zones.json"


def save(state_dir: str | Path, zones: Zones | None) -> Path | None:
    """Keep ``zones`` for the next start; None forgets them (the stream proposes again). The file's path, or None."""
    path = Path(state_dir) / ZONES_FILE
    if zones is None:
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, (json.dumps({"zones": zones.to_dict()}, indent=1) + "\n").encode())


def saved(state_dir: str | Path) -> Zones | None:
    """The zones kept in ``state_dir``, None when there are none; ValueError (one line) for a file that does not read."""
    path = Path(state_dir) / ZONES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("zones"), dict):
            raise ValueError('expected {"zones": {zone: [[x, y], ...]}}')
        return Zones.from_dict(data["zones"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def starting_zones(name: str, configured: Zones | None, state_dir: Path | None, event_path: bool,
                   warn: Callable[[str], None]) -> Zones | None:
    """The zones a stream starts with: the config's, else its state dir's file, else None (proposed).
    A damaged file is set aside (kept, renamed), with one line; zones for a bundle without an event
    head are one line too, and apply to nothing."""
    if not event_path:
        if configured is not None:
            warn(f"{name}: zones are given, but the bundle has no event head: they apply to nothing")
        return None
    kept = None
    if state_dir is not None:
        try:
            kept = saved(state_dir)
        except ValueError as err:
            aside = set_aside(Path(state_dir) / ZONES_FILE, "corrupt")
            warn(f"{name}: {err}; its zones are proposed again (the file is kept as {aside.name})")
    if configured is not None and kept is not None and kept != configured:
        warn(f"{name}: the config's zones are used, not those set over the API ({Path(state_dir) / ZONES_FILE})")
    return configured if configured is not None else kept
