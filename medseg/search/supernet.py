"""CAKES supernet layer (docs/specs/blocks-spec.md §3.5–3.6): every candidate op at full width, one learnable scale γ
per path.

    x ─┬─ conv 3×3×3 → C_out → N → ×γ₁ ─┐
       ├─ conv 3×3×1 → C_out → N → ×γ₂ ─┤ mean over ops (+ β) → y (C_out)
       └─ …                             ─┘
A path is one (op, output channel) pair, with importance |γ|; the search keeps C_out paths per layer and path
(op, c) becomes one channel of the final network with conv_op's filter shape.

Our adaptation of the paper's concat + BN supernet (docs/specs/blocks-spec.md K5): the nets need every layer to stay
C_out wide (norm, activation, next conv, UNet skips and dense concats follow), so the paths are summed per output
channel instead of concatenated. N is a parameter-free InstanceNorm per op and γ, β take over the affine of the layer's
own norm, which `to_supernet` replaces by an identity. A kept path is then exactly a channel of the final network,
IN(conv_op(x))·γ + β, and γ keeps the meaning of the paper's BN γ: scaling one path changes what the next layer sees
(the following InstanceNorm would otherwise make every channel's scale, and so |γ|, meaningless).

Variants (docs/specs/blocks-spec.md §3.6, K2/K3):
* performance (P): each training forward keeps a uniform random C_out of the n_ops·C_out paths and convolves only
  those filters (as one conv), so activations stay C_out wide; the kept paths at full weight are an unbiased
  estimate of the mean over ops that evaluation computes.
* cost (C): every path every step, and after each optimiser step a proximal L1 step on γ weighted by kernel volume
  (`shrink`); with AdamW a soft threshold is the exact L1 update, where adding s·sign(γ) to the gradient would be
  rescaled by Adam's moments.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks.cakes import Cakes, op_kernel
from medseg.blocks.size import pad_kernel, same_padding
from medseg.nets.layers import ConvNormAct


def layer_ops(space: tuple[str, ...], kernel: tuple[int, int, int]) -> tuple[str, ...]:
    """The space's ops that give distinct kernels for this layer: with an anisotropic base kernel such as (3, 3, 1),
    3x3x3 and 3x3x1 are the same conv, searched once under the first name."""
    distinct: dict[tuple[int, int, int], str] = {}
    for op in space:
        distinct.setdefault(op_kernel(op, kernel), op)
    return tuple(distinct.values())


def kernel_volumes(ops: tuple[str, ...], kernel: tuple[int, int, int]) -> list[int]:
    return [math.prod(op_kernel(op, kernel)) for op in ops]


def sample_paths(n_ops: int, out_channels: int, device: torch.device | None = None) -> torch.Tensor:
    """(n_ops, C_out) mask keeping exactly C_out of the n_ops·C_out paths, uniformly at random."""
    keep = torch.zeros(n_ops * out_channels, dtype=torch.bool, device=device)
    keep[torch.randperm(n_ops * out_channels, device=device)[:out_channels]] = True
    return keep.view(n_ops, out_channels)


def per_channel(values: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, 1, 1, 1)  # (C,) -> (1, C, 1, 1, 1), broadcast over (N, C, D, H, W)


class SuperCakes(nn.Module):
    """One searchable layer: a full-width conv per candidate op, per-path scales γ (n_ops, C_out), bias β (C_out).

    Args:
        ops: candidate ops (see `layer_ops`).
        sample: performance variant, a random C_out paths per training forward (`active` holds the last mask).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                 ops: tuple[str, ...], sample: bool):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel, self.stride, self.ops, self.sample = (
            in_channels, out_channels, kernel, stride, ops, sample)
        self.convs = nn.ModuleList(
            nn.Conv3d(in_channels, out_channels, op_kernel(op, kernel), stride, same_padding(op_kernel(op, kernel)),
                      bias=False)
            for op in ops
        )
        self.gamma = nn.Parameter(torch.ones(len(ops), out_channels))
        self.beta = nn.Parameter(torch.zeros(out_channels))
        volumes = torch.tensor(kernel_volumes(ops, kernel), dtype=torch.float32)
        self.register_buffer("l1_weight", volumes / volumes.sum(), persistent=False)  # w_op ∝ |K_op|, Σ = 1
        self.active: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sample and self.training:
            return self.sampled(x)
        parts = [F.instance_norm(conv(x)) * per_channel(g) for conv, g in zip(self.convs, self.gamma, strict=True)]
        return sum(parts) / len(parts) + per_channel(self.beta)

    def sampled(self, x: torch.Tensor) -> torch.Tensor:
        """The kept paths as one conv: each kept filter zero-padded to the layer's full kernel gives the same output
        as its own conv with "same" padding, and one conv of C_out filters runs far faster on CPU than a small conv
        per op (measured on a UNet step: as long as the all-3D net's, instead of ~15× as long)."""
        self.active = sample_paths(len(self.ops), self.out_channels, x.device)
        op, channel = self.active.nonzero(as_tuple=True)  # (C_out,) each: the kept paths
        weights = torch.stack([pad_kernel(c.weight, self.kernel) for c in self.convs])  # (n_ops, C_out, C_in, k³)
        part = F.conv3d(x, weights[op, channel], None, self.stride, same_padding(self.kernel))  # (N, C_out, ...)
        part = F.instance_norm(part) * per_channel(self.gamma[op, channel])
        return part.new_zeros(part.shape).index_add(1, channel, part) + per_channel(self.beta)  # path (op, c) → c

    @torch.no_grad()
    def shrink(self, step: float) -> None:
        """Proximal L1 step γ ← sign(γ)·max(|γ| − step·w_op, 0): expensive ops are pushed to zero faster."""
        threshold = step * self.l1_weight[:, None]  # (n_ops, 1)
        self.gamma.copy_(self.gamma.sign() * (self.gamma.abs() - threshold).clamp(min=0))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, ops={list(self.ops)}, sample={self.sample}"


def to_supernet(net: nn.Module, space: tuple[str, ...], sample: bool) -> dict[str, SuperCakes]:
    """Replace every Cakes layer of `net` (in place) by a SuperCakes over `space`; returns them by qualified name.

    A Cakes that opens a ConvNormAct takes over its norm (replaced by an identity), see the module docstring.
    """
    layers = {}
    for name, module in list(net.named_modules()):
        if not isinstance(module, Cakes):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        layer = SuperCakes(module.in_channels, module.out_channels, module.kernel, module.stride,
                           layer_ops(space, module.kernel), sample)
        setattr(parent, child, layer)
        if isinstance(parent, ConvNormAct) and child == "0":
            parent[1] = nn.Identity()
        layers[name] = layer
    return layers
