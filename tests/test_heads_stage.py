"""Heads stage: event labels of memory tokens, the token-activity and identity losses, the heads'
aux outputs, and taking the sampler from a checkpoint."""
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.config import load_model_config
from export.train.losses import token_activity_loss
from export.model.lvmnet import LVMNet
from export.train.token_targets import event_token_labels, event_token_targets
from export.train.joint_stage import token_labels

TINY = Path(__file__).resolve().parent.parent / "configs" / "models" / "lvm-tiny.yaml"


def _ann():
    track5 = [[t / 5, 0.4, 0.4, 0.6, 0.6] for t in range(0, 100)]     # patch 24
    track6 = [[t / 5, 0.98, 0.05, 1.0, 0.15] for t in range(0, 100)]  # row 0, col 6 -> patch 6
    return {"boxes": {"5": track5, "6": track6},
            "events": [{"instance_id": 5, "activity_id": 1, "start": 3.0, "end": 5.0},
                       {"instance_id": 6, "activity_id": 4, "start": 4.0, "end": 7.0}]}


def test_event_token_labels_name_instance_and_activity():
    times = np.arange(10.0)
    inst, act = event_token_labels(_ann(), times, grid=7)
    assert inst.shape == act.shape == (10, 49) and inst.dtype == np.int32
    assert inst[3, 24] == inst[4, 24] == 5 and act[3, 24] == 1
    assert inst[4, 6] == inst[6, 6] == 6 and act[5, 6] == 4
    assert inst[5, 24] == -1 and act[7, 6] == -1          # ends are exclusive
    assert ((inst >= 0) == (act >= 0)).all()
    np.testing.assert_array_equal(event_token_targets(_ann(), times, 7), (inst >= 0).astype(np.float32))


def test_memory_token_lookup_and_token_activity_loss():
    _, act = event_token_labels(_ann(), np.arange(10.0), grid=7)
    labels = torch.from_numpy(np.stack([act, np.full_like(act, -1)]))  # video 0 and a video with no events
    times = torch.tensor([[3.0, 5.0, 5.0, 0.0], [3.0, 5.0, 5.0, 0.0]])
    patches = torch.tensor([[24, 6, 24, 0], [24, 6, 24, 0]])
    got = token_labels(labels, torch.tensor([0, 1]), times, patches, fps=1.0)
    assert got.tolist() == [[1, 4, -1, -1], [-1, -1, -1, -1]]
    keep = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    good = torch.full((2, 4, 8), -6.0)
    good[0, 0, 1] = good[0, 1, 4] = 6.0
    wrong = good.clone()
    wrong[0, 0, 1], wrong[0, 0, 2] = -6.0, 6.0
    assert token_activity_loss(good, got, keep) < 0.05
    assert token_activity_loss(wrong, got, keep) > 3.0
    before = token_activity_loss(wrong, got, keep)
    wrong[:, 3] = 50.0  # a slot outside the window never counts
    assert token_activity_loss(wrong, got, keep) == before


def test_heads_aux_outputs_match_the_exported_outputs():
    cfg = load_model_config(TINY)
    torch.manual_seed(0)
    net = LVMNet(cfg).eval()
    m, d, P, Q, L = 12, cfg.backbone.dim, cfg.backbone.tokens_per_frame, 3, 5
    mem = (torch.randn(1, m, d), torch.linspace(0, 30, m)[None], torch.randint(0, P, (1, m)), torch.ones(1, m))
    basis, sv = torch.zeros(1, cfg.svd.n_components, d), torch.zeros(1, cfg.svd.n_components)
    q = dict(q_type=torch.tensor([0, 1, 2]), q_activity=torch.tensor([0, 2, 3]), q_object=torch.randn(Q, P, d),
             q_window=torch.tensor([[0.0, 30.0], [10.0, 20.0], [0.0, 15.0]]),
             q_times=torch.linspace(0, 30, L).repeat(Q, 1), q_mask=torch.ones(Q, L))
    with torch.no_grad():
        plain = net.heads(*mem, basis, sv, **q)
        out, aux = net.heads(*mem, basis, sv, **q, return_aux=True)
    for a, b in zip(plain, out):
        torch.testing.assert_close(a, b)
    assert aux["identity"].shape == (Q, m) and aux["token_activity"].shape == (Q, m, cfg.heads.num_activities)
    # the window of query 1 (10..20 s) keeps only the tokens inside it
    inside = ((mem[1][0] >= 10.0 - 0.5) & (mem[1][0] <= 20.0 + 0.5)).float()
    torch.testing.assert_close(aux["keep"][1], inside)


def test_sampler_from_rejects_a_checkpoint_of_another_sampler(tmp_path):
    from export.model.checkpoint import CheckpointError, load_stage1_state, save_checkpoint

    cfg = load_model_config(TINY)
    other = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"layers": 1})})
    path = save_checkpoint(LVMNet(other), tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="sampler settings differ"):
        load_stage1_state(path, cfg)
    state = load_stage1_state(save_checkpoint(LVMNet(cfg), tmp_path / "same.safetensors"), cfg)
    assert state and all(k.startswith(("backbone.", "sampler.")) for k in state)
