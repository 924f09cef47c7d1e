"""CAKES: channel-wise automatic kernel shrinking (Yu, Li, Mei, Zhou, Yuille, AAAI 2021; docs/specs/blocks-spec.md §3).

    x ─┬─ conv 3×3×3 → c₁ channels ─┐
       ├─ conv 3×3×1 → c₂ ──────────┤ concat → y        Σ c_op = C_out, every op reads all C_in inputs
       └─ conv 1×1×3 → c₃ ──────────┘

Each output channel gets its own sub-kernel (3D, one of three 2D planes, one of three 1D axes): a channel-wise
mixture, not a factorisation, so the layer keeps its width and depth while most channels pay 9 or 3 taps
instead of 27. The split is fixed (an even split over a named op space) or searched (`medseg search` writes a JSON
configuration keyed by qualified module name; `configure` applies it once the network is built).

Op names give the kernel pattern over the spatial axes (S0, S1, S2) of (N, C, S0, S1, S2): "3" keeps the layer's
kernel on that axis, "1" drops it. After RAS reorientation S2 is through-plane for axial scans, so "3x3x1" is
in-plane 2D and "1x1x3" through-plane 1D. With an anisotropic base kernel such as (3, 3, 1), "3x3x3" is (3, 3, 1).
"""

import json
from pathlib import Path

import torch
from torch import nn

from medseg.blocks.size import Size3, even_split, keep_axes, pad_kernel, same_padding, triple
from medseg.errors import MedsegError
from medseg.ops import fast_paths_enabled
from medseg.ops.built import built_conv3d
from medseg.registry import look_up, look_up_all

OPS = ("3x3x3", "3x3x1", "3x1x3", "1x3x3", "3x1x1", "1x3x1", "1x1x3")  # the fixed concat order
SPACES: dict[str, tuple[str, ...]] = {
    "all": OPS,                                  # the 7-op volumetric space
    "3d-2d-1d": ("3x3x3", "3x3x1", "1x1x3"),     # CAKES_{1,2,3D}: 3D, in-plane 2D, through-plane 1D
    "3d-2d": ("3x3x3", "3x3x1"),                 # CAKES_{2,3D}
    "2d-1d": ("3x3x1", "1x1x3"),                 # CAKES_{1,2D}
    "2d": ("3x3x1", "3x1x3", "1x3x3"),           # three planes, ACSConv-like
}
CONFIG_SCHEMA = 1


def op_axes(op: str) -> list[int]:
    """The spatial axes an op filters along ("3x1x3" → [0, 2])."""
    return [i for i, c in enumerate(op.split("x")) if c == "3"]


def op_kernel(op: str, kernel: tuple[int, int, int]) -> tuple[int, int, int]:
    return keep_axes(kernel, op_axes(op))


def resolve_ops(ops: str | list[str] | dict[str, int], out_channels: int) -> dict[str, int]:
    """{op: channels} from a space name, an op list (even split) or an explicit split."""
    if isinstance(ops, str):
        ops = list(look_up(ops, SPACES, "cakes op space"))
    if not isinstance(ops, dict):
        ops = dict(zip(ops, even_split(out_channels, len(ops)), strict=True))
    look_up_all(ops, dict.fromkeys(OPS), "cakes op")
    if any(not isinstance(c, int) or c < 0 for c in ops.values()) or sum(ops.values()) != out_channels:
        raise MedsegError(f"cakes: op channels {ops} must be non-negative integers summing to {out_channels}")
    return {op: ops[op] for op in OPS if ops.get(op, 0) > 0}


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MedsegError(f"{path}: cannot read the configuration ({e})") from e


def check_config(data: dict) -> dict:
    """A searched configuration as loaded from its JSON file (`medseg search` writes it)."""
    if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
        raise MedsegError("CAKES configuration: no 'layers' mapping")
    if data.get("schema") != CONFIG_SCHEMA:
        raise MedsegError(f"CAKES configuration schema {data.get('schema')!r}; this medseg reads {CONFIG_SCHEMA}")
    return data


class Cakes(nn.Module):
    """Drop-in Conv3d whose output channels are split over sub-kernel shapes.

    Args:
        ops: an op space name (even split, see SPACES), a list of ops (even split) or {op: channels}.
        config: a searched configuration (its JSON path or content); the split then comes from its entry for this
            layer's qualified name, applied by `Cakes.configure(net)` after the network is built.
    """

    # fuse layers narrower than this (see fused()): every width, since fusing the wide layers too made the whole
    # net faster and smaller in `medseg bench --device cpu` (docs/dev/cpu-performance.md)
    FUSE_BELOW = float("inf")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Size3 = 3, stride: Size3 = 1, *,
                 bias: bool = False, ops: str | list[str] | dict[str, int] = "all", config: str | dict | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.fuse_below = self.FUSE_BELOW
        self.kernel, self.stride, self.bias = triple(kernel_size), triple(stride), bias
        self.config = None if config is None else check_config(read_json(config) if isinstance(config, str) else config)
        self.set_split(resolve_ops(ops, out_channels))

    def set_split(self, split: dict[str, int]) -> None:
        self.split = split
        self.convs = nn.ModuleList(
            nn.Conv3d(self.in_channels, c, op_kernel(op, self.kernel), self.stride,
                      same_padding(op_kernel(op, self.kernel)), bias=self.bias)
            for op, c in split.items()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        if (self.out_channels < self.fuse_below and x.is_contiguous(memory_format=torch.channels_last_3d)
                and fast_paths_enabled()):
            return self.fused(x)
        return torch.cat([conv(x) for conv in self.convs], dim=1)  # (N, Σ c_op = C_out, ...)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """All ops as one conv whose weight holds each op's sub-kernel zero-padded to the layer's kernel: the same
        output from one read of x and no concatenation. On the CPU (channels_last_3d) thin convs are bound by
        memory traffic, not arithmetic, so the dense kernel costs what one conv costs instead of one conv per op
        (at every width of the recipe nets: docs/dev/cpu-performance.md); NCDHW runs (the GPU) keep the separate convs
        and the nominal FLOPs that `medseg bench` and `medseg search` count."""
        params = [t for conv in self.convs for t in (conv.weight, conv.bias) if t is not None]
        return built_conv3d(x, self.fused_kernel, params, self.stride, same_padding(self.kernel))

    def fused_kernel(self, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) of the one conv from the ops' (weight[, bias]), in op order."""
        step = 2 if self.bias else 1
        weight = torch.cat([pad_kernel(w, self.kernel) for w in params[::step]])  # (C_out, C_in, *kernel)
        bias = torch.cat(params[1::2]) if self.bias else None
        return weight.contiguous(memory_format=torch.channels_last_3d), bias

    def extra_repr(self) -> str:
        return f"split={self.split}"

    @staticmethod
    def configure(net: nn.Module) -> None:
        """Apply a searched configuration to every CAKES layer built with one, checking it fits the network."""
        layers = {name: m for name, m in net.named_modules() if isinstance(m, Cakes) and m.config is not None}
        if not layers:
            return
        entries = next(iter(layers.values())).config["layers"]
        unknown, missing = sorted(set(entries) - set(layers)), sorted(set(layers) - set(entries))
        if unknown or missing:
            raise MedsegError("CAKES configuration does not fit this network: "
                              + (f"unknown layers {unknown[:3]}" if unknown else f"no entry for {missing[:3]}")
                              + " (searched for another architecture or widths?)")
        for name, layer in layers.items():
            entry = entries[name]
            if (entry.get("in"), entry.get("out")) != (layer.in_channels, layer.out_channels):
                raise MedsegError(f"CAKES configuration: layer {name} is {entry.get('in')}→{entry.get('out')} "
                                  f"channels there but {layer.in_channels}→{layer.out_channels} here")
            try:
                layer.set_split(resolve_ops(entry["ops"], layer.out_channels))
            except (KeyError, MedsegError) as e:  # the layer's name added to the message
                raise MedsegError(f"CAKES configuration: layer {name}: {e}") from e
