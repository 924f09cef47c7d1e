"""Loss for EM instance targets: binary cross-entropy plus soft Dice, both leaving out ignored voxels (-1)."""

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn


class MaskedDiceBCE(nn.Module):
    """Targets in [0, 1] (the distance target is soft) with -1 where a voxel is ignored; logits of the same shape.

    Cross-entropy carries the soft and the thin targets (boundaries are ~10 % of the voxels); Dice keeps the
    boundary channel from collapsing to "no boundary" on patches deep inside large neurons.
    """

    def __init__(self):
        super().__init__()
        self.dice = MaskedDiceLoss(sigmoid=True, smooth_nr=0, smooth_dr=1e-5, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = (target >= 0).to(logits.dtype)
        target = target.clamp(min=0)
        bce = F.binary_cross_entropy_with_logits(logits, target, weight=keep, reduction="sum") / keep.sum().clamp(min=1)
        per_channel = [self.dice(logits[:, c : c + 1], target[:, c : c + 1], keep[:, c : c + 1])
                       for c in range(logits.shape[1])]  # MaskedDiceLoss takes one mask channel for all channels
        return bce + torch.stack(per_channel).mean()
