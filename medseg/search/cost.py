"""What a CAKES configuration costs, exactly: parameters and conv FLOPs of the whole network on one patch.

The searchable layers are costed in closed form (docs/specs/blocks-spec.md §3.8: a channel of op K reading C_in inputs
has C_in·|K| weights and C_in·|K|·2·V FLOPs at V output voxels, counted like torch's FlopCounterMode); everything else
(stem, upsampling, head) is a fixed cost measured once on the all-3D network. The callers build the networks
on the meta device, so costing a recipe allocates nothing.
"""

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from medseg.bench.flops import count_flops
from medseg.blocks.cakes import Cakes
from medseg.errors import MedsegError
from medseg.search.supernet import kernel_volumes, layer_ops

Metric = Literal["flops", "params"]
Split = dict[str, int]


@dataclass(frozen=True)
class Layer:
    """One searchable layer: qualified name (relative to the net), candidate ops, widths, output voxels per patch."""

    name: str
    ops: tuple[str, ...]
    kernel: tuple[int, int, int]
    c_in: int
    c_out: int
    voxels: int

    def path_cost(self, metric: Metric) -> np.ndarray:
        """(n_ops,) cost of one output channel of each op."""
        per_weight = 2 * self.voxels if metric == "flops" else 1
        return np.array(kernel_volumes(self.ops, self.kernel), dtype=np.float64) * self.c_in * per_weight

    def full_3d_cost(self, metric: Metric) -> float:
        return self.c_out * self.c_in * math.prod(self.kernel) * (2 * self.voxels if metric == "flops" else 1)

    def cost(self, split: Split, metric: Metric) -> float:
        return float(sum(split.get(op, 0) * c for op, c in zip(self.ops, self.path_cost(metric), strict=True)))


def net_cost(net: nn.Module, x: torch.Tensor) -> dict[str, int]:
    return {"params": sum(p.numel() for p in net.parameters()), "flops": count_flops(net, x)}


@dataclass(frozen=True)
class NetCost:
    """The searchable layers of a recipe's network and the cost of its all-3D (plain conv) version."""

    layers: list[Layer]
    all_3d: dict[str, int]

    def fixed(self, metric: Metric) -> float:
        return self.all_3d[metric] - sum(layer.full_3d_cost(metric) for layer in self.layers)

    def total(self, splits: dict[str, Split], metric: Metric) -> float:
        return self.fixed(metric) + sum(layer.cost(splits[layer.name], metric) for layer in self.layers)

    def floor(self, metric: Metric) -> float:
        """Every channel on its layer's cheapest op."""
        return self.fixed(metric) + sum(layer.c_out * layer.path_cost(metric).min() for layer in self.layers)

    def check_budget(self, budget: float, metric: Metric) -> None:
        """A budget must lie in (0, 1] and not below the cheapest configuration; checked before any training."""
        floor = self.floor(metric) / self.all_3d[metric]
        if not 0 < budget <= 1 or budget < floor:
            raise MedsegError(f"--search.budget={budget}: need a fraction in (0, 1] of the all-3D network's {metric}, "
                              f"at least {floor:.3f} (every channel on its cheapest op)")


def measure(conv: nn.Module, cakes: nn.Module, space: tuple[str, ...], x: torch.Tensor) -> NetCost:
    """Searchable layers (the CAKES layers of `cakes`) and the cost of `conv`, the same net with plain convs."""
    voxels: dict[str, int] = {}
    found = {name: m for name, m in cakes.named_modules() if isinstance(m, Cakes)}
    for name, m in found.items():
        m.register_forward_hook(lambda _m, _x, y, name=name: voxels.__setitem__(name, y.shape[2:].numel()))
    cakes(x)
    layers = [Layer(name, layer_ops(space, m.kernel), m.kernel, m.in_channels, m.out_channels, voxels[name])
              for name, m in found.items()]
    return NetCost(layers, net_cost(conv, x))
