"""The track labeler's weights in a bundle: lvm-export copies ``<checkpoint stem>-track-labels.safetensors``
(export/train/track_labels.py writes it) into the bundle as ``track_labels.safetensors`` and lists it
under the manifest's ``events.track_labels``, after checking that the runtime's numpy recurrence
gives PyTorch's probabilities on it (``parity``). A bundle without it reads the geometric labeler's
item events in its queries."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edge_runtime.file_hash import sha256_file
from edge_runtime.items.sequence_model import SequenceModel
from export.cli.common import UsageError

BUNDLE_FILE = "track_labels.safetensors"
PARITY_TOL = 1e-4   # the most a probability may differ between numpy and PyTorch


def default_track_labels_path(checkpoint: Path) -> Path:
    """``<checkpoint dir>/<checkpoint stem>-track-labels.safetensors``: where lvm-export looks for it."""
    return checkpoint.with_name(f"{checkpoint.stem}-track-labels.safetensors")


def parity(model: SequenceModel, seed: int = 0) -> float:
    """The largest difference in p(class) between the runtime's numpy model and PyTorch's GRU with the
    same weights, on random tracks of several lengths batched together."""
    import torch

    from export.train.track_labels import GRULabeler

    hidden = model.weights["inp.weight"].shape[0]
    net = GRULabeler(model.features, hidden, model.layers, len(model.classes))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.weights.items()})
    rng = np.random.default_rng(seed)
    seqs = [(model.mean + model.sd * rng.normal(size=(n, model.features))).astype(np.float32) for n in (1, 7, 60)]
    worst = 0.0
    with torch.no_grad():
        for x, p in zip(seqs, model.probs(seqs)):
            ref = torch.softmax(net(torch.from_numpy(((x - model.mean) / model.sd)[None])), -1)[0].numpy()
            worst = max(worst, float(np.abs(p - ref).max()))
    return worst


def check_track_labels(checkpoint: Path, event_fps: float, notes: list[str],
                       events_sha256: str | None = None) -> dict | None:
    """The checkpoint's track labeler, checked (it loads, its rate is the event head's, it learnt the
    tracks of the event head file ``events_sha256`` when its file names one, numpy gives PyTorch's
    probabilities) -> the manifest's ``events.track_labels`` section less the bundle copy's hash,
    or None (a note says why) when there is none beside the checkpoint. Run before the bundle's folder
    exists: it imports and computes, and a stop then leaves nothing to clean."""
    src = default_track_labels_path(checkpoint)
    if not src.is_file():
        notes.append(f"no track labeler (no {src.name} beside the checkpoint): queries read the geometric "
                     "labeler's item events")
        return None
    try:
        model = SequenceModel.load(src)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not model.fits(event_fps):
        raise UsageError(f"{src}: trained at {model.fps:g} fps, the event head runs at {event_fps:g}; train it again")
    learnt = model.meta.get("events_sha256")
    if learnt and events_sha256 and learnt != events_sha256:
        raise UsageError(f"{src}: learnt the item tracks of another event head (sha256 {learnt[:12]}), not the "
                         f"checkpoint's; train it again (lvm-train --events-only, or python -m "
                         f"export.train.track_labels)")
    worst = parity(model)
    if worst > PARITY_TOL:
        raise UsageError(f"{src}: the runtime's recurrence differs from PyTorch's by {worst:.2g} (> {PARITY_TOL:g})")
    return {"file": BUNDLE_FILE, "source": src.name, "classes": list(model.classes), "parity_max_abs": worst,
            "trained": model.meta, "_path": str(src)}


def copy_track_labels(bundle_dir: Path, section: dict) -> dict:
    """Copy the checked file into the bundle -> its manifest section (with the copy's sha256)."""
    src = Path(section["_path"])
    shutil.copyfile(src, bundle_dir / BUNDLE_FILE)
    out = {k: v for k, v in section.items() if k != "_path"}
    return {"file": out.pop("file"), "sha256": sha256_file(bundle_dir / BUNDLE_FILE), **out}
