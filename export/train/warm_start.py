"""Starting lvm-train from weights another run made: --init-from (the whole model, e.g. fine-tuning
the shipped checkpoint to a new vocabulary), and the record of where a backbone taken from another
file (--init-from, --backbone-from, --sampler-from) got its weights."""
from __future__ import annotations

from export.cli.common import UsageError


def taken_init(path: str) -> str:
    """What a backbone taken from another file was made from, for the checkpoint's backbone_init."""
    from export.model.checkpoint import CheckpointError, read_metadata

    try:
        origin = read_metadata(path).get("backbone_init", "unknown")
    except CheckpointError:
        origin = "backbone weights file"  # a bare OUT/backbone.safetensors of another run
    return f"{origin} (taken from {path})"


def check_init_from(path: str, cfg) -> None:
    """Before anything is decoded: the checkpoint exists and is this architecture (the number of
    activities aside)."""
    from export.model.checkpoint import CheckpointError, checkpoint_config

    try:
        ck = checkpoint_config(path)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    same = ck.model_copy(update={"heads": ck.heads.model_copy(update={"num_activities": cfg.heads.num_activities})})
    if same.arch_digest() != cfg.arch_digest():
        raise UsageError(f"--init-from {path}: made for model '{ck.name}', another architecture than config "
                         f"'{cfg.name}' (only the number of activities may differ)")


def init_from(net, path: str) -> str:
    """Load a checkpoint's tensors into ``net``; those whose shape differs keep their fresh init.
    Returns the line that says what was taken."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise UsageError(f"--init-from {path}: truncated or damaged ({str(err).splitlines()[0][:100]})") from None
    own = net.state_dict()
    if set(state) != set(own):
        odd = sorted(set(state) ^ set(own))
        raise UsageError(f"--init-from {path}: its tensors do not match the model ({len(odd)} differ, e.g. {odd[0]}); "
                         f"made by another version of lvm-edge?")
    fresh = sorted(k for k in own if state[k].shape != own[k].shape)
    net.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    line = f"lvm-train: backbone, sampler and heads from {path}"
    if fresh:
        line += f"; re-initialised (shape changed): {', '.join(fresh)}"
    return line
