"""Drop-in replacements for `nn.Conv3d`, chosen by name through one factory.

Contract for every block: constructor `(in_channels, out_channels, kernel_size=3, stride=1, *, bias=False, **kw)`,
int or per-axis kernel and stride, "same" padding (output = ceil(input / stride)), no norm or activation at the
output. Nets call `make_conv3d` and never import a block class, so adding a block here is the only switch.
"""

from typing import Literal

from torch import nn

from medseg.blocks.cakes import Cakes, read_json
from medseg.blocks.conv import Conv
from medseg.blocks.pmscn import PmSCn
from medseg.blocks.sic import SIC
from medseg.blocks.size import Size3
from medseg.registry import look_up

BLOCKS: dict[str, type[nn.Module]] = {"conv": Conv, "pmscn": PmSCn, "cakes": Cakes, "sic": SIC}
BlockKind = Literal[tuple(BLOCKS)]


def make_conv3d(
    kind: str | type[nn.Module],
    in_channels: int,
    out_channels: int,
    kernel_size: Size3 = 3,
    stride: Size3 = 1,
    *,
    bias: bool = False,
    **kwargs,
) -> nn.Module:
    """Build the 3D convolution `kind` (a registered name, or a class for experiments)."""
    if isinstance(kind, str):
        kind = look_up(kind, BLOCKS, "block")
    return kind(in_channels, out_channels, kernel_size, stride, bias=bias, **kwargs)


def embed_config_file(block_kwargs: dict | None) -> dict:
    """Block kwargs with a `config` file path replaced by the file's JSON content, so a checkpoint carries the
    configuration itself (predict must not depend on the file staying where training found it)."""
    kwargs = dict(block_kwargs or {})
    if isinstance(kwargs.get("config"), str):
        kwargs["config"] = read_json(kwargs["config"])
    return kwargs


def configure_blocks(net: nn.Module) -> nn.Module:
    """Let blocks whose settings depend on where they sit (a searched CAKES split, keyed by qualified module name)
    configure themselves once the whole network exists."""
    for block in BLOCKS.values():
        if hasattr(block, "configure"):
            block.configure(net)
    return net


__all__ = ["BLOCKS", "BlockKind", "Size3", "configure_blocks", "embed_config_file", "make_conv3d"]
