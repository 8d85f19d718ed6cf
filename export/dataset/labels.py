"""The label lists of a dataset (labels.yaml): activity names and object-class names, in id order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_runtime.query.catalog import name_key

LABELS_VERSION = 1


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message is one line naming file and field."""


@dataclass(frozen=True)
class LabelSet:
    """Activity and object-class names; a name's position is its id (activity_id, class_id)."""

    activities: tuple[str, ...]
    objects: tuple[str, ...]

    def to_dict(self) -> dict:
        # "products": the key bundle manifests and the generator's annotations use for object classes
        return {"activities": list(self.activities), "products": list(self.objects)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        """From {"activities": [...], "products" or "objects": [...]}; DatasetError when a list is bad."""
        problems = label_problems(d)
        if problems:
            field, msg = problems[0]
            raise DatasetError(f"labels: {field}: {msg}")
        return cls(tuple(d["activities"]), tuple(d["objects"] if "objects" in d else d["products"]))

    @classmethod
    def generator(cls, shrink: bool = False) -> LabelSet:
        """The procedural checkout generator's labels: its activities without shrink (those of lvm-train's
        videos and the shipped model) or, with ``shrink``, all of them (pass_around too), and PRODUCTS."""
        from edge_runtime.checkout import ACTIVITIES, BASE_ACTIVITIES, PRODUCTS

        return cls(tuple(ACTIVITIES if shrink else BASE_ACTIVITIES), tuple(PRODUCTS))

    def to_yaml(self) -> str:
        import yaml

        body = {"version": LABELS_VERSION, "activities": list(self.activities), "objects": list(self.objects)}
        return yaml.safe_dump(body, sort_keys=False)


def label_problems(d: object, *, yaml_file: bool = False) -> list[tuple[str, str]]:
    """Every problem of a labels mapping as (field, message); empty when it is usable.

    ``yaml_file``: it is labels.yaml itself, which must say ``version: 1`` and names objects ``objects``."""
    if not isinstance(d, dict):
        return [("", f"must be a mapping with activities and objects, got {type(d).__name__}")]
    out = []
    if yaml_file:
        if "version" not in d:
            out.append(("version", f"missing (this reader knows version {LABELS_VERSION})"))
        elif d["version"] != LABELS_VERSION:
            out.append(("version", f"{d['version']!r} is not a version this reader knows ({LABELS_VERSION})"))
        unknown = sorted(set(d) - {"version", "activities", "objects"}, key=str)
        if unknown:
            out.append((str(unknown[0]), "unknown key (known: version, activities, objects)"))
    obj_key = "objects" if yaml_file or "objects" in d or "products" not in d else "products"
    for key in ("activities", obj_key):
        out += [(f"{key}{sub}", msg) for sub, msg in _names_problems(d.get(key))]
    return out


def _names_problems(names: object) -> list[tuple[str, str]]:
    if names is None:
        return [("", "missing (a list of names)")]
    if not isinstance(names, (list, tuple)) or not names:
        return [("", "must be a non-empty list of names")]
    out, seen = [], {}
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            out.append((f"[{i}]", f"{n!r} is not a non-empty string"))
        elif name_key(n) in seen:  # "Milk" and "milk" would be one name to ask and to the catalog
            j = seen[name_key(n)]
            out.append((f"[{i}]", f"{n!r} repeats [{j}]" if names[j] == n
                        else f"{n!r} is [{j}] {names[j]!r} but for case or spacing"))
        else:
            seen[name_key(n)] = i
    return out


def read_labels_file(path: Path) -> tuple[LabelSet | None, list[tuple[str, str]]]:
    """(the labels, []) or (None, every problem as (field, message)); never raises."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return None, [("", "missing (version: 1, activities: [...], objects: [...])")]
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        return None, [("", f"cannot be read ({err})")]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return None, [("", f"not valid YAML{where}: {getattr(err, 'problem', None) or err}")]
    problems = label_problems(d, yaml_file=True)
    if problems:
        return None, problems
    return LabelSet(tuple(d["activities"]), tuple(d["objects"])), []


def load_labels(path) -> LabelSet:
    """labels.yaml -> LabelSet; DatasetError (one line naming file and field) when it is unusable."""
    labels, problems = read_labels_file(Path(path))
    if labels is None:
        field, msg = problems[0]
        raise DatasetError(f"{path}: {field + ': ' if field else ''}{msg}")
    return labels
