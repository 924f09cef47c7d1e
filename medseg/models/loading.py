"""Loading a medseg checkpoint (a bundled model or a training run's best.ckpt): the Plan and the network weights,
with weights_only=True, and the network the Plan describes. Saving lives in medseg.training.callbacks."""

from pathlib import Path

import torch

from medseg.data.plan import Plan
from medseg.errors import MedsegError
from medseg.nets import build_net


def load_checkpoint(path: str | Path) -> tuple[Plan, dict]:
    """(plan, network state_dict), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MedsegError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "medseg" not in ckpt or "state_dict" not in ckpt:
        raise MedsegError(f"{path}: not a medseg checkpoint (no 'medseg' metadata); train it with medseg train")
    state = {k.removeprefix("net."): v.float() for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return Plan.from_dict(ckpt["medseg"], str(path)), state


def build_model(plan: Plan, state: dict, path: str | Path) -> torch.nn.Module:
    try:
        net = build_net(plan.arch, len(plan.modalities), len(plan.regions), **plan.net)
        net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise MedsegError(f"{path}: checkpoint does not fit this medseg version ({str(e).splitlines()[0]})") from None
    return net.eval()
