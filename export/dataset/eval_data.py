"""Which footage an evaluation scores when it is a dataset folder's split (lvm-eval --data, the
accuracy gate of lvm-export --data), and whether a checkpoint can be scored on it at all.

No torch here: the checks run before the model is loaded, so a bad folder fails in a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export.dataset import DatasetError, DatasetItem, LabelSet, open_dataset


@dataclass(frozen=True)
class DataSplit:
    root: Path
    split: str
    labels: LabelSet
    items: list[DatasetItem]

    @classmethod
    def open(cls, root: Path, split: str) -> DataSplit:
        """The split's items; DatasetError (one line) for a bad folder or a split without videos."""
        ds = open_dataset(root)
        items = ds.split(split)
        if not items:  # Dataset.split refuses this itself; a second guard costs nothing
            have = sorted({it.split for it in ds.items})
            raise DatasetError(f"{root}: split {split!r} has no videos (splits: {', '.join(have) or 'none'})")
        return cls(Path(root), split, ds.labels, list(items))

    def describe(self) -> dict:
        """What a result or manifest records about the footage it was scored on."""
        return {"path": str(self.root), "split": self.split, "videos": len(self.items),
                "stems": [it.stem for it in self.items]}


def labels_mismatch(checkpoint_labels: dict | None, labels: LabelSet, checkpoint: Path, root: Path) -> str | None:
    """One line when the checkpoint's activity classes are not the dataset's (by name, in order),
    else None. A checkpoint without stored labels was trained on the generator's classes."""
    if checkpoint_labels is None:
        mine, whose = list(LabelSet.generator().activities), "the generator's activities"
    else:
        mine, whose = list(checkpoint_labels["activities"]), "its activities"
    theirs = list(labels.activities)
    if mine == theirs:
        return None
    return (f"{checkpoint}: {whose} [{', '.join(mine)}] are not {Path(root) / 'labels.yaml'}'s "
            f"[{', '.join(theirs)}]; use a checkpoint trained on this dataset (lvm-train --data {root})")
