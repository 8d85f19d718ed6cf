"""Training losses (LVM-Net §4): focal for activities, L1 + gIoU for boxes, CE for start/end."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
