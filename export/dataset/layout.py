"""What a dataset folder holds, read without interpreting it: its file layout, its small JSON and
YAML files, and how an event's or instance's label resolves against labels.yaml. Both the reader
(folder.py) and the checker (check.py) stand on this; neither needs the other's logic here."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .labels import LabelSet

VIDEOS, ANNOTATIONS, LABELS_FILE, SPLITS_FILE = "videos", "annotations", "labels.yaml", "splits.yaml"
# (event field, id field, LabelSet attribute, the annotation's own list of names, what labels.yaml calls it)
ACTIVITY_KEYS = ("activity", "activity_id", "activities", "activities", "activities")
OBJECT_KEYS = ("product", "class_id", "objects", "products", "objects")


@dataclass
class Layout:
    """What files a dataset folder holds, before anything is parsed."""
    root: Path
    videos: dict[str, list[Path]]        # stem -> video files (more than one is a problem)
    annotations: dict[str, Path]         # stem -> annotations/<stem>.json
    others: list[Path]                   # files in annotations/ that are not .json (ignored)
    missing_dirs: list[str]

    def rel(self, path: Path) -> str:
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def scan_layout(root) -> Layout:
    root = Path(root)
    videos: dict[str, list[Path]] = {}
    annotations: dict[str, Path] = {}
    others, missing = [], []
    for sub in (VIDEOS, ANNOTATIONS):
        if not (root / sub).is_dir():
            missing.append(sub)
    for p in _files(root / VIDEOS):
        videos.setdefault(p.stem, []).append(p)
    for p in _files(root / ANNOTATIONS):
        if p.suffix.lower() == ".json":
            annotations[p.stem] = p
        else:
            others.append(p)
    return Layout(root, videos, annotations, others, missing)


def _files(d: Path) -> list[Path]:
    # hidden files (.DS_Store, editor swap files) are never data
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


def read_json(path: Path) -> tuple[object, str | None]:
    """(parsed value, None) or (None, one-line reason)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")), None
    except json.JSONDecodeError as err:
        return None, f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot be read ({getattr(err, 'strerror', None) or err})"


def read_splits(path: Path, stems: set[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """splits.yaml -> ({stem: split}, [(field, problem), ...]); an absent file is no splits."""
    import yaml

    if not path.is_file():
        return {}, []
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return {}, [("", f"not valid YAML ({str(err).splitlines()[0]})")]
    if d is None:
        return {}, []
    if not isinstance(d, dict):
        return {}, [("", "must map split names to lists of stems, e.g. {train: [a, b], test: [c]}")]
    out: dict[str, str] = {}
    problems = []
    for name, members in d.items():
        if not isinstance(name, str) or not name.strip():
            problems.append((str(name), "a split name must be a non-empty string"))
            continue
        if not isinstance(members, list):
            problems.append((name, "must be a list of stems"))
            continue
        for i, stem in enumerate(members):
            if not isinstance(stem, str) or stem not in stems:
                problems.append((f"{name}[{i}]", f"{stem!r} is no stem of this dataset (videos/<stem>.*, "
                                                 f"annotations/<stem>.json)"))
            elif stem in out:
                problems.append((f"{name}[{i}]", f"{stem!r} is also in split {out[stem]!r}"))
            else:
                out[stem] = name
    return out, problems


def resolve_label(entry: dict, keys: tuple, labels: LabelSet, ann: dict) -> tuple[str, int] | str:
    """(name, id) of an event's activity or an instance's object class, or a one-line problem
    starting with the field it is about. A name wins; an id is read through the annotation's own
    list of names when it has one (the generator writes ``activities``/``products``), else as a
    position in labels.yaml."""
    name_key, id_key, attr, own_key, yaml_key = keys
    names = getattr(labels, attr)
    name = entry.get(name_key)
    if name is not None:
        if isinstance(name, str) and name in names:
            return name, names.index(name)
        return f"{name_key}: {name!r} not in labels.yaml {yaml_key}"
    i = entry.get(id_key)
    if i is None:
        return f"{name_key}: missing (give {name_key} or {id_key})"
    if isinstance(i, bool) or not isinstance(i, int):
        return f"{id_key}: {i!r} is not an integer"
    own = ann.get(own_key)
    if isinstance(own, list) and own:
        if not 0 <= i < len(own):
            return f"{id_key}: {i} out of range (the file's own {own_key} has {len(own)})"
        if own[i] not in names:
            return f"{id_key}: {i} is {own[i]!r} in the file's own {own_key}, not in labels.yaml {yaml_key}"
        return own[i], names.index(own[i])
    if not 0 <= i < len(names):
        return f"{id_key}: {i} out of range (labels.yaml has {len(names)} {yaml_key})"
    return names[i], i
