"""Training losses: focal for activities, L1 + gIoU for boxes, CE for start/end (the LVM-Net
paper's recipe), and balanced BCE for per-token targets (the sampler's event tokens, the heads'
identity and token-activity readouts), whose positives are ~1 % of the tokens."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_runtime.query.types import BY_NAME


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Multi-label sigmoid focal loss (Lin et al. 2017), summed over classes, mean over rows."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).sum(-1).mean()


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of x1y1x2y2 boxes (..., 4) -> (...)."""
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = area_a + area_b - inter
    iou = inter / union.clamp_min(1e-7)
    lt_c = torch.minimum(a[..., :2], b[..., :2])
    rb_c = torch.maximum(a[..., 2:], b[..., 2:])
    hull = (rb_c - lt_c).clamp_min(0).prod(-1)
    return iou - (hull - union) / hull.clamp_min(1e-7)


def box_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, l1_weight: float,
             giou_weight: float) -> torch.Tensor:
    """pred/target (Q, L, 4), mask (Q, L): mean over masked frames of λ1·L1 + λg·(1 - gIoU)."""
    n = mask.sum().clamp_min(1.0)
    l1 = ((pred - target).abs().sum(-1) * mask).sum() / n
    g = ((1.0 - giou(pred, target)) * mask).sum() / n
    return l1_weight * l1 + giou_weight * g


def interval_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_idx: torch.Tensor,
                  end_idx: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(start_logits, start_idx) + F.cross_entropy(end_logits, end_idx)


QUERY_TARGETS = ("act_target", "box_target", "box_mask", "start_idx", "end_idx", "is_type")


def query_loss_terms(out, tg: dict[str, torch.Tensor], tc) -> dict[str, torch.Tensor]:
    """Heads outputs + QueryBatch targets (QUERY_TARGETS) -> focal / L1+gIoU / CE terms per query type;
    "extent": CE of object queries' start/end outputs against their track's first and last box."""
    act, boxes, s_log, e_log = out
    w = tg["is_type"]
    a, o, t = (w[:, BY_NAME[name].id] > 0 for name in ("activity", "object", "time"))
    return {
        "activity": focal_loss(act[a], tg["act_target"][a]) if a.any() else act.sum() * 0,
        "object": (box_loss(boxes[o], tg["box_target"][o], tg["box_mask"][o], tc.l1_weight, tc.giou_weight)
                   if o.any() else boxes.sum() * 0),
        "time": (interval_loss(s_log[t], e_log[t], tg["start_idx"][t], tg["end_idx"][t])
                 if t.any() else s_log.sum() * 0),
        "extent": (interval_loss(s_log[o], e_log[o], tg["start_idx"][o], tg["end_idx"][o])
                   if o.any() else s_log.sum() * 0),
    }


def token_loss(scores: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Balanced BCE of token scores against 0/1 token targets (the sampler's event tokens, the heads'
    identity): positives are ~1 % of the candidates."""
    return balanced_mean(F.binary_cross_entropy_with_logits(scores, target, reduction="none"),
                         target, weight)


def balanced_mean(loss: torch.Tensor, is_pos: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``loss`` over the weighted positives plus its mean over the weighted negatives."""
    pos, neg = is_pos * weight, (1.0 - is_pos) * weight
    out = (loss * neg).sum() / neg.sum().clamp_min(1.0)
    if pos.sum() > 0:
        out = out + (loss * pos).sum() / pos.sum()
    return out


def token_activity_loss(logits: torch.Tensor, act: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """logits (Q, m, C), act (Q, m) activity id or -1, keep (Q, m): BCE against the one-hot activity
    of event tokens (all zeros elsewhere), balanced: mean over event tokens + mean over the others."""
    is_event = (act >= 0).to(logits.dtype)
    target = F.one_hot(act.clamp_min(0).long(), logits.shape[-1]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target * is_event[..., None], reduction="none").sum(-1)
    return balanced_mean(bce, is_event, keep)
