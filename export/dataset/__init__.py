"""Datasets of one's own footage: a folder of videos, per-video annotations (the checkout-rest format)
and labels.yaml; reading, checking, statistics and rendering generator videos as such a folder.
No torch here: the runtime side and ``lvm-data`` use it without the training stack.

    from export.dataset import open_dataset
    ds = open_dataset("data/shop")          # DatasetError (one line) if lvm-data check would fail
    for item in ds.split("train"): item.video, item.annotations, item.crop_files

Modules: ``labels`` (labels.yaml), ``layout`` (the folder's files as they are), ``folder`` (normalised
annotations), ``check`` (every problem, one line each), ``stats``, ``render`` (generator videos as
files), ``cvat_xml`` and ``cvat`` (the CVAT import: reading, converting), ``verdicts`` (staff's verdicts on
alerts as items), ``video_data`` (frames and
annotations of a generated or own video), ``eval_data`` (which footage an evaluation scores).
"""
from .check import Problem, check_dataset
from .folder import Dataset, DatasetError, DatasetItem, open_dataset
from .labels import LabelSet, load_labels

__all__ = ["Dataset", "DatasetError", "DatasetItem", "LabelSet", "Problem", "check_dataset", "load_labels",
           "open_dataset"]
