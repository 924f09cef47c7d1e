import json
import math

import pytest
import torch
import yaml
from torch import nn

from medseg.bench.measure import state_mib
from medseg.bench.run import RECIPE, bench, load_recipe
from medseg.blocks import BLOCKS
from medseg.cli import main
from medseg.nets import NETS, build_net

RECIPE_TINY = {"model": {"channels": [4, 8, 16], "strides": [1, 2, [2, 2, 1]], "kernel_sizes": [3, 3, [3, 3, 1]]},
               "data": {"patch_size": [16, 16, 8], "samples_per_case": 2}}


def conv_flops(net: nn.Module, x: torch.Tensor) -> int:
    """2 × MACs of every Conv3d / ConvTranspose3d, from the shapes their forward hooks see."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        spatial = inputs[0].shape[2:] if isinstance(module, nn.ConvTranspose3d) else output.shape[2:]
        total += 2 * module.weight.numel() * math.prod(spatial) * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]
    with torch.inference_mode():
        net(x)
    for h in handles:
        h.remove()
    return total


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("bench")
    recipe, out = folder / "recipe.yaml", folder / "bench.json"
    recipe.write_text(yaml.safe_dump(RECIPE_TINY))
    assert main(["bench", "--config", str(recipe), "--device", "cpu", "--shape", "40", "40", "24", "--repeats", "1",
                 "--layer-size", "8", "--threads", "1", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_covers_every_registered_net_and_block(records):
    nets = [(r["arch"], r["block"]) for r in records if r["table"] == "net"]
    assert sorted(nets) == sorted((a, b) for a in NETS for b in BLOCKS)
    assert sorted(r["block"] for r in records if r["table"] == "layer") == sorted(BLOCKS)
    for r in records:
        assert r["params"] > 0 and r["flops"] > 0 and r["cpu_ms"] > 0 and r["peak_mib"] is not None
        assert r["threads"] == 1 and r["device"] == "cpu" and r["channels_last"]  # the CPU default layout
    for r in (r for r in records if r["table"] == "net"):
        assert r["train_ms"] > 0 and r["train_peak_mib"] is not None and r["train_batch"] == 2  # 1 case × 2 patches
        assert r["train_x"] is not None and r["peak_x"] is not None
    per_axis = [math.ceil((n - p) / int(p * 0.75)) + 1 for n, p in zip((40, 40, 24), (16, 16, 8), strict=True)]
    assert {r["windows"] for r in records if r["table"] == "net"} == {math.prod(per_axis)}  # MONAI's scan at 1/4


def test_peaks_count_the_weights_and_optimizer_state_the_run_holds(records):
    for r in records:
        assert r["peak_mib"] >= r["params"] * 4 / 2**20  # float32 weights, resident through the run
    for r in (r for r in records if r["table"] == "net"):
        assert r["weights_mib"] == pytest.approx(r["params"] * 4 / 2**20)  # no buffers: affine norms, no stats
        assert r["train_peak_mib"] >= 3 * r["weights_mib"]  # weights + AdamW's two moments (+ gradients)


def test_state_mib_counts_storages_once_and_the_optimizer_state():
    net = nn.Sequential(nn.Linear(256, 256, bias=False), nn.Linear(256, 256, bias=False))
    net[1].weight = net[0].weight  # tied: one storage
    assert state_mib(net) == 256 * 256 * 4 / 2**20
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, 256)).sum().backward()
    optimizer.step()
    assert state_mib(net, optimizer) == pytest.approx(3 * 256 * 256 * 4 / 2**20, rel=1e-4)  # + exp_avg, exp_avg_sq


def test_bench_counts_match_independent_counts(records):
    model = RECIPE_TINY["model"]
    for r in (r for r in records if r["table"] == "net"):
        net = build_net(r["arch"], 2, 3, block=r["block"], **model).eval()
        assert r["params"] == sum(p.numel() for p in net.parameters())
        if r["block"] == "conv":
            assert r["flops"] == conv_flops(net, torch.randn(1, 2, 16, 16, 8))
        conv = next(c for c in records if c["table"] == "net" and c["arch"] == r["arch"] and c["block"] == "conv")
        assert r["params_x"] == pytest.approx(r["params"] / conv["params"])
        assert r["time_x"] == pytest.approx(r["cpu_ms"] / conv["cpu_ms"])


def test_single_conv_layer_flops_are_exact(records):
    layer = next(r for r in records if r["table"] == "layer" and r["block"] == "conv")
    assert layer["params"] == 27 * 64 * 64
    assert layer["flops"] == 2 * 27 * 64 * 64 * 8**3
    assert layer["flops_x"] == 1.0


def test_gpu_widths_replace_the_recipe_channels(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE_TINY, "model": {**RECIPE_TINY["model"], "channels": [1] * 5,
                                                               "strides": [1] * 5, "kernel_sizes": [3] * 5}}))
    records = bench(recipe, ["unet"], ["sic"], shape=(8, 8, 8), repeats=1, device="cpu", widths="gpu",
                    channels_last=False, layer_size=0)
    assert records[0]["widths"] == [32, 64, 128, 256, 320] and not records[0]["channels_last"]
    net = build_net("unet", 2, 3, block="sic", channels=[32, 64, 128, 256, 320], strides=[1] * 5, kernel_sizes=[3] * 5)
    assert records[0]["params"] == sum(p.numel() for p in net.parameters())


def test_block_kwargs_build_the_block_with_those_settings(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE_TINY))
    assert main(["bench", "--config", str(recipe), "--archs", "unet", "--blocks", "conv", "pmscn", "--device", "cpu",
                 "--shape", "16", "16", "8", "--repeats", "1", "--layer-size", "4", "--threads", "1",
                 "--block-kwargs", "pmscn={inner_act: true, m: 1}", "--json", str(tmp_path / "b.json")]) == 0
    assert 'pmscn built with {"inner_act": true, "m": 1}' in capsys.readouterr().out
    records = json.loads((tmp_path / "b.json").read_text())
    net = build_net("unet", 2, 3, block="pmscn", block_kwargs={"inner_act": True, "m": 1}, **RECIPE_TINY["model"])
    pmscn = [r for r in records if r["block"] == "pmscn"]
    assert pmscn[0]["params"] == sum(p.numel() for p in net.parameters())
    assert pmscn[1]["params"] == sum(p.numel() for p in BLOCKS["pmscn"](64, 64, m=1, inner_act=True).parameters())
    assert all(r["block_kwargs"] == {"inner_act": True, "m": 1} for r in pmscn)


def test_default_recipe_is_the_brats_one():
    net, patch, volume = load_recipe(RECIPE)
    assert net == {"channels": [8, 16, 32, 64, 128], "strides": [1, 2, 2, 2, 2], "kernel_sizes": [3] * 5}
    assert patch == [64, 64, 64]
    assert volume == (120, 120, 78)  # a 240×240×155 1 mm BraTS scan at the recipe's 2 mm


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--blocks", "pmsnc"], "unknown block 'pmsnc'; did you mean 'pmscn'? choose one of"),
        (["--archs", "vnet"], "unknown architecture 'vnet'; did you mean 'unet'? choose one of"),
        (["--config", "missing.yaml"], "missing.yaml: not a recipe"),
        (["--repeats", "0"], "--repeats ≥ 1"),
        (["--config", "RECIPE_TINY", "--widths", "gpu"], "--widths gpu needs a 5-stage recipe"),
        (["--block-kwargs", "pmscn"], "--block-kwargs 'pmscn': expected BLOCK={key: value, …}"),
        (["--block-kwargs", "pmsnc={m: 1}"], "unknown block (--block-kwargs) 'pmsnc'"),
    ],
    ids=["block", "arch", "config", "repeats", "widths", "kwargs", "kwargs-block"],
)
def test_bad_input_is_a_one_line_error(capsys, tmp_path, argv, message):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(RECIPE_TINY))
    argv = [str(tmp_path / "tiny.yaml") if a == "RECIPE_TINY" else a for a in argv]
    assert main(["bench", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_user_error(capsys):
    assert main(["bench", "--device", "cuda", "--blocks", "conv"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
