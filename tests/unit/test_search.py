"""CAKES search: path sampling, proximal L1, selection (with a budget), the configuration file, and the command."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medseg.blocks.cakes import OPS, SPACES, Cakes, check_config
from medseg.cli import main
from medseg.errors import MedsegError
from medseg.nets import NETS, build_net
from medseg.search.cost import measure, net_cost
from medseg.search.output import configuration, write_configuration
from medseg.search.select import select, select_within
from medseg.search.supernet import SuperCakes, layer_ops, to_supernet
from tests.conftest import REPO, TINY

NET = {"channels": [4, 8], "strides": [1, 2], "kernel_sizes": [3, 3]}
PATCH = [16, 16, 16]


def meta_costs(space: str = "all"):
    with torch.device("meta"):
        conv = build_net("unet", 2, 3, block="conv", **NET)
        cakes = build_net("unet", 2, 3, block="cakes", **NET)
    return measure(conv, cakes, SPACES[space], torch.empty(1, 2, *PATCH, device="meta"))


def favouring_3d(costs) -> dict[str, np.ndarray]:
    """Importances under which every layer would keep only 3D paths, so any budget < 1 binds."""
    rng = np.random.default_rng(0)
    return {layer.name: np.vstack([np.ones((1, layer.c_out)), rng.uniform(0, 0.5, (len(layer.ops) - 1, layer.c_out))])
            for layer in costs.layers}


def test_sampling_keeps_exactly_c_out_paths_per_layer_and_step():
    net = build_net("unet", 2, 3, block="cakes", **NET)
    layers = to_supernet(net, OPS, sample=True)
    masks = []
    for _ in range(4):
        assert net(torch.randn(1, 2, *PATCH)).shape == (1, 3, *PATCH)
        for layer in layers.values():
            assert layer.active.shape == (len(OPS), layer.out_channels)
            assert int(layer.active.sum()) == layer.out_channels
        masks.append(torch.cat([layer.active.flatten() for layer in layers.values()]))
    assert any(not torch.equal(masks[0], m) for m in masks[1:])
    net.eval()  # evaluation uses every path
    assert net(torch.randn(1, 2, *PATCH)).shape == (1, 3, *PATCH)


@pytest.mark.parametrize("kernel, stride", [((3, 3, 3), (1, 1, 1)), ((3, 3, 1), (2, 2, 1)), ((3, 3, 3), (2, 1, 2))],
                         ids=str)
def test_sampled_forward_is_the_sum_of_the_kept_paths(kernel, stride):
    """One padded conv over the kept filters equals each kept path through its own conv, summed per channel."""
    layer = SuperCakes(3, 5, kernel, stride, layer_ops(OPS, kernel), sample=True)
    with torch.no_grad():
        layer.gamma.uniform_(0.5, 1.5)
        layer.beta.uniform_(-1, 1)
    x = torch.randn(2, 3, 7, 6, 5)
    y = layer(x)
    expected = layer.beta.view(1, -1, 1, 1, 1).expand_as(y).clone()
    for op, c in layer.active.nonzero().tolist():
        expected[:, c] += F.instance_norm(layer.convs[op](x))[:, c] * layer.gamma[op, c]
    torch.testing.assert_close(y, expected)


def test_supernet_takes_over_the_following_norm():
    net = build_net("unet", 2, 3, block="cakes", **NET)
    layers = to_supernet(net, OPS, sample=False)
    for name in layers:
        unit = net.get_submodule(name.rpartition(".")[0])
        assert isinstance(unit[0], SuperCakes) and isinstance(unit[1], nn.Identity)
    assert isinstance(net.encoder[0][0][1], nn.InstanceNorm3d)  # the plain stem keeps its norm


@pytest.mark.parametrize("arch", NETS)
def test_every_arch_becomes_a_trainable_supernet_costed_layer_by_layer(arch):
    net = build_net(arch, 2, 3, block="cakes", **NET)
    layers = to_supernet(net, OPS, sample=True)
    net(torch.randn(1, 2, *PATCH)).sum().backward()
    assert all(layer.gamma.grad is not None for layer in layers.values())
    with torch.device("meta"):
        costs = measure(build_net(arch, 2, 3, **NET), build_net(arch, 2, 3, block="cakes", **NET), OPS,
                        torch.empty(1, 2, *PATCH, device="meta"))
    assert [layer.name for layer in costs.layers] == list(layers)


def test_proximal_step_shrinks_by_kernel_volume_and_stops_at_zero():
    layer = SuperCakes(2, 4, (3, 3, 3), (1, 1, 1), SPACES["3d-2d-1d"], sample=False)
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([[1.0], [1.0], [-1.0]]).expand(3, 4))
    layer.shrink(0.13)
    torch.testing.assert_close(layer.gamma[:, 0], torch.tensor([1 - 0.09, 1 - 0.03, -(1 - 0.01)]))  # 9:3:1 of 0.13
    layer.shrink(100.0)
    assert torch.equal(layer.gamma, torch.zeros(3, 4))




def test_selection_keeps_c_out_channels_with_the_largest_gamma():
    costs = meta_costs()
    rng = np.random.default_rng(0)
    importance = {layer.name: rng.uniform(0, 1, (len(layer.ops), layer.c_out)) for layer in costs.layers}
    splits = select(costs.layers, importance)
    for layer in costs.layers:
        assert sum(splits[layer.name].values()) == layer.c_out
        assert all(isinstance(c, int) and c >= 0 for c in splits[layer.name].values())
    first = costs.layers[0]
    top = np.argsort(-importance[first.name].ravel())[: first.c_out] // first.c_out  # op of each top path
    assert list(splits[first.name].values()) == np.bincount(top, minlength=len(first.ops)).tolist()
    tied = select(costs.layers, {layer.name: np.ones((len(layer.ops), layer.c_out)) for layer in costs.layers})
    assert all(tied[layer.name]["3x1x1"] == layer.c_out for layer in costs.layers)  # ties: cheapest op, first


@pytest.mark.parametrize("metric", ["flops", "params"])
@pytest.mark.parametrize("budget", [0.3, 0.5, 0.8])
def test_budget_is_met(budget, metric):
    costs = meta_costs()
    importance = favouring_3d(costs)
    assert costs.total(select(costs.layers, importance), metric) > budget * costs.all_3d[metric]  # it binds
    splits = select_within(costs, importance, budget, metric)
    assert all(sum(splits[layer.name].values()) == layer.c_out for layer in costs.layers)
    config = configuration(costs.layers, splits, {})
    with torch.device("meta"):
        net = build_net("unet", 2, 3, block="cakes", block_kwargs={"config": config}, **NET)
    counted = net_cost(net, torch.empty(1, 2, *PATCH, device="meta"))
    assert counted[metric] == costs.total(splits, metric) <= budget * costs.all_3d[metric]
    assert counted[metric] >= (budget - 0.15) * costs.all_3d[metric]  # and does not give away much of it


def test_budget_below_the_all_1d_network_is_an_error():
    costs = meta_costs()
    with pytest.raises(MedsegError, match=r"budget=0.05: .* at least 0\.\d+ \(every channel on its cheapest op\)"):
        select_within(costs, favouring_3d(costs), 0.05, "flops")


def test_configuration_file_round_trips(tmp_path):
    costs = meta_costs()
    splits = select_within(costs, favouring_3d(costs), 0.5, "flops")
    path = tmp_path / "cakes.json"
    write_configuration(path, configuration(costs.layers, splits, {"variant": "performance"}))
    data = check_config(json.loads(path.read_text()))
    assert data["ops"]["1x3x3"] == [1, 3, 3] and data["provenance"] == {"variant": "performance"}
    loaded = build_net("unet", 2, 3, block="cakes", block_kwargs={"config": str(path)}, **NET)
    direct = build_net("unet", 2, 3, block="cakes", **NET)
    for name, layer in direct.named_modules():
        if isinstance(layer, Cakes):
            layer.set_split({op: c for op, c in splits[name].items() if c})
    assert loaded.state_dict().keys() == direct.state_dict().keys()
    params = sum(p.numel() for p in loaded.parameters())
    assert params == sum(p.numel() for p in direct.parameters()) == costs.total(splits, "params")


def check_file(path) -> dict:
    """What the hidden check asks of a written configuration: non-negative integer counts summing to C_out."""
    data = check_config(json.loads(path.read_text()))
    for entry in data["layers"].values():
        assert all(isinstance(c, int) and c >= 0 for c in entry["ops"].values())
        assert sum(entry["ops"].values()) == entry["out"]
    return data


def search_tiny(root, run, output, *extra: str) -> int:
    return main(["search", "--config", str(REPO / "configs/brats.yaml"), f"--data.root={root}", *TINY,
                 f"--trainer.default_root_dir={run}", f"--output={output}", *extra])
