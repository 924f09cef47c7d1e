"""InstanceNorm that keeps the memory format, so channels_last_3d convolutions run back to back.

`nn.InstanceNorm3d` reshapes its input to a contiguous (1, N·C, …) view for batch_norm, which turns every
channels_last_3d tensor back into NCDHW and makes the next oneDNN conv convert it again. Instance norm is group
norm with one channel per group, and PyTorch's group_norm kernel has a channels-last path (and is faster in NCDHW
too: 2×8×64³, 2 threads, forward + backward 27 vs 40 ms; whole conv UNet training step 4.9 vs 6.9 s in
channels_last_3d). Subclassing keeps the module name and the state_dict keys (weight, bias), so existing
checkpoints load unchanged.
"""

import torch
from torch import nn
from torch.nn import functional as F


class InstanceNorm3d(nn.InstanceNorm3d):
    """`nn.InstanceNorm3d` computed by group_norm (one group per channel): same outputs, layout kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 5:
            return super().forward(x)  # running statistics and unbatched input: torch's own path
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
