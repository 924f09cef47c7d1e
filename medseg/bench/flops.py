"""Floating-point operations of one forward pass, as PyTorch's FlopCounterMode counts them (convolutions and
matrix products; elementwise work is free). Library code: `medseg bench` and `medseg search` both cost nets with it."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()
