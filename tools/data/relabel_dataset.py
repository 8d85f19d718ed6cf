"""Copy a dataset folder with its activities renamed or merged: what a user does to coarsen a
vocabulary, and how the fine-tuning measurement (docs/own-footage.md) builds its 5-class data.

    python -m tools.data.relabel_dataset SRC DST --map pick_up=handle --map put_back=handle ...

Every activity of SRC's labels.yaml must be mapped (a missing one is an error, not silently dropped).
The new vocabulary is the mapped names in order of first appearance. Videos and crops are linked
(hard links where possible), not copied; annotations are rewritten with the new names and ids.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path


from export.dataset import LabelSet, open_dataset  # noqa: E402


def _link_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def relabel(src: Path, dst: Path, mapping: dict[str, str]) -> LabelSet:
    ds = open_dataset(src)
    missing = [a for a in ds.labels.activities if a not in mapping]
    if missing:
        raise SystemExit(f"relabel: no --map for {', '.join(missing)}")
    names = list(dict.fromkeys(mapping[a] for a in ds.labels.activities))
    labels = LabelSet(tuple(names), ds.labels.objects)
    if dst.exists():
        raise SystemExit(f"relabel: {dst} exists")
    for sub in ("videos", "crops"):
        if (src / sub).is_dir():
            _link_tree(src / sub, dst / sub)
    (dst / "annotations").mkdir(parents=True)
    (dst / "labels.yaml").write_text(labels.to_yaml(), encoding="utf-8")
    if (src / "splits.yaml").is_file():
        shutil.copy2(src / "splits.yaml", dst / "splits.yaml")
    for item in ds.items:
        ann = json.loads(item.annotation_path.read_text(encoding="utf-8"))
        ann["activities"] = names
        for ev in ann.get("events") or []:
            name = ev.get("activity")
            if name is None:
                name = ds.labels.activities[int(ev["activity_id"])]
            new = mapping[name]
            ev["activity"], ev["activity_id"] = new, names.index(new)
        (dst / "annotations" / item.annotation_path.name).write_text(json.dumps(ann), encoding="utf-8")
    return labels


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.data.relabel_dataset", description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW", help="rename activity OLD to NEW")
    a = p.parse_args()
    mapping = {}
    for m in a.map:
        old, sep, new = m.partition("=")
        if not sep or not old or not new:
            raise SystemExit(f"relabel: --map {m!r} is not OLD=NEW")
        mapping[old] = new
    labels = relabel(a.src, a.dst, mapping)
    print(f"relabel: {a.dst}: {len(labels.activities)} activities: {', '.join(labels.activities)}")


if __name__ == "__main__":
    main()
