"""Every private PyTorch / Lightning API medseg uses (medseg.compat) exists on the installed versions, inside the
bounds pyproject.toml declares; a release that drops one fails here by name."""

import re
from importlib.metadata import version
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from torch import nn
from torch.nn import functional as F

from medseg import compat

PYPROJECT = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()


def major(package: str) -> int:
    return int(version(package).split(".")[0])


def test_installed_versions_are_inside_the_declared_bounds():
    for package in ("torch", "lightning"):
        bound = re.search(rf'"{package}>=[\d.]+,<(\d+)"', PYPROJECT)
        assert bound, f"pyproject.toml declares no upper bound for {package}"
        assert major(package) < int(bound.group(1))


def test_model_checkpoint_private_members_exist():
    for name in compat.CHECKPOINT_METHODS:
        assert callable(getattr(ModelCheckpoint, name, None)), f"ModelCheckpoint.{name} is gone"
    callback = ModelCheckpoint()
    step = compat.last_step_saved(callback)
    assert isinstance(step, int)
    compat.set_last_step_saved(callback, step + 7)
    assert compat.last_step_saved(callback) == step + 7


def test_wandb_logger_init_kwargs_are_a_mutable_dict(tmp_path):
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="p")
    init = compat.wandb_init_kwargs(logger)
    assert init["project"] == "p"
    init["settings"] = {"x_disable_meta": True}
    assert compat.wandb_init_kwargs(logger)["settings"] == {"x_disable_meta": True}


def test_compile_can_be_undone():
    net = nn.Linear(2, 2)
    assert not compat.is_compiled(net)
    net.compile()
    assert compat.is_compiled(net)
    compat.uncompile(net)
    assert not compat.is_compiled(net)
    x = torch.randn(3, 2)
    assert torch.equal(net(x), F.linear(x, net.weight, net.bias))  # eager again, no compilation triggered


def test_native_group_norm_returns_the_statistics():
    x = torch.randn(2, 3, 4, 4, 4)
    y, mean, rstd = compat.native_group_norm(x, None, None, 2, 3, 64, 3, 1e-5)
    assert torch.allclose(y, F.instance_norm(x, eps=1e-5), atol=1e-5)
    assert torch.allclose(mean, x.mean((2, 3, 4)), atol=1e-6) and rstd.shape == (2, 3)


def test_convolution_backward_gives_the_conv_gradients():
    x = torch.randn(1, 2, 5, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, 3, requires_grad=True)
    y = F.conv3d(x, w, padding=1)
    dy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    ours = compat.convolution_backward(dy, x.detach(), w.detach(), None, [1] * 3, [1] * 3, [1] * 3, False, [0] * 3, 1,
                                       [True, True, False])
    assert torch.allclose(ours[0], dx, atol=1e-5) and torch.allclose(ours[1], dw, atol=1e-4)
