"""`medseg search`: train a CAKES supernet on a recipe's data, select the configuration, write it as JSON.

    medseg search --config configs/brats.yaml --data.datalist=dl.json --output cakes.json [--search.variant=cost]
    medseg train  --config configs/brats.yaml --data.datalist=dl.json --model.block=cakes \
                  --model.block_kwargs.config=cakes.json

The command line is `medseg train`'s (LightningCLI: recipes, dotted overrides, the same data options, progress bar,
wandb) plus `--search.*` and `--output`. The searchable layers are those the recipe's `model.block` fills (the stem,
1×1×1 convs, upsampling and head stay plain). Validation is off by default (`--trainer.limit_val_batches` turns it
on): the supernet's Dice is not that of any network the search can return (docs/specs/blocks-spec.md K11). `last.ckpt`
resumes a search with `--ckpt_path`; it holds a supernet, which `medseg predict` refuses. Resuming at the step limit
reached selects again at once, e.g. under another `--search.budget`: γ does not depend on the budget.
"""

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

import medseg
from medseg.blocks.cakes import SPACES
from medseg.errors import MedsegError
from medseg.nets import build_net
from medseg.search.cost import Layer, Metric, measure, net_cost
from medseg.search.output import configuration, cost_table, mix_table, write_configuration
from medseg.search.select import op_mix, select, select_within
from medseg.search.supernet import to_supernet
from medseg.training.cli import MedsegCLI, build_cli
from medseg.training.module import SegModule

Variant = Literal["performance", "cost"]
SpaceName = Literal[tuple(SPACES)]


class SearchModule(SegModule):
    """SegModule over a CAKES supernet: the recipe's net with every CAKES layer replaced by a SuperCakes.

    Args:
        variant: performance (random path sampling, the default for 3D volumes, docs/specs/blocks-spec.md K2) or cost
            (proximal L1 on γ weighted by kernel volume).
        l1: the cost variant's L1 strength s: every optimiser step shrinks |γ| by lr·s·w_op, w_op = the op's share of
            the space's kernel volume. AdamW moves a weight by about lr per step at most, so s weighs the L1 pull
            against the most consistent loss pull; the paper's s = 1e-4 suits SGD gradients and would be inert here.
        **kwargs: SegModule's; block must be "cakes" with block_kwargs {"ops": <space name>} (the CLI links them).
    """

    def __init__(self, variant: Variant = "performance", l1: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        space = (self.hparams.block_kwargs or {}).get("ops")
        if self.hparams.block != "cakes" or space not in SPACES:
            raise MedsegError(f"search: need block 'cakes' with an op space from {sorted(SPACES)}, "
                              f"got {self.hparams.block!r} with {self.hparams.block_kwargs}")
        if l1 < 0:
            raise MedsegError(f"--search.l1={l1}: must be ≥ 0")
        self.search_layers = to_supernet(self.net, SPACES[space], sample=variant == "performance")
        if not self.search_layers:
            raise MedsegError(f"search: {self.hparams.arch} at these settings has no searchable layer")

    def layers(self) -> list[Layer]:
        """The searchable layers, without voxel counts: enough to select without a budget."""
        return [Layer(name, m.ops, m.kernel, m.in_channels, m.out_channels, 0)
                for name, m in self.search_layers.items()]

    def importance(self) -> dict[str, np.ndarray]:
        """|γ| per layer, (n_ops, C_out)."""
        return {name: m.gamma.detach().abs().double().cpu().numpy() for name, m in self.search_layers.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW as in training, without weight decay on γ and β: only the L1 step shrinks γ (docs/specs/blocks-spec.md
        §3.6)."""
        searched = [p for m in self.search_layers.values() for p in (m.gamma, m.beta)]
        ids = {id(p) for p in searched}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return torch.optim.AdamW([{"params": rest}, {"params": searched, "weight_decay": 0.0}],
                                 lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.hparams.variant == "cost":
            step = optimizer.param_groups[-1]["lr"] * self.hparams.l1
            for layer in self.search_layers.values():
                layer.shrink(step)

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        """The op mix the search would return now (without a budget), so wandb shows it evolve; cheap next to a
        step, and Lightning writes it every log_every_n_steps."""
        for op, share in op_mix(select(self.layers(), self.importance())).items():
            self.log(f"search/share_{op}", share)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """No 'medseg' metadata: a supernet resumes a search but is not a network to predict with."""
        checkpoint["medseg_search"] = {"version": medseg.__version__, "variant": self.hparams.variant}


def searched_block(space: str) -> str:
    """The layers the recipe's block fills become CAKES layers (then supernet layers), whatever the recipe says."""
    return "cakes"


def searched_block_kwargs(space: str) -> dict:
    return {"ops": space}


class SearchCLI(MedsegCLI):
    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--output", required=True, help="configuration file to write (JSON)")
        parser.add_argument("--search.variant", type=Variant, default="performance",
                            help="performance: random path sampling; cost: L1 on γ weighted by kernel volume")
        parser.add_argument("--search.ops", type=SpaceName, default="all", help="candidate op space")
        parser.add_argument("--search.budget", type=float | None, default=None,
                            help="keep the network's FLOPs (or params, see budget_on) ≤ this fraction of all-3D")
        parser.add_argument("--search.budget_on", type=Metric, default="flops", help="what the budget limits")
        parser.add_argument("--search.l1", type=float, default=0.5, help="cost variant: L1 strength s")
        parser.link_arguments("search.variant", "model.variant")
        parser.link_arguments("search.l1", "model.l1")
        parser.link_arguments("search.ops", "model.block", compute_fn=searched_block)
        parser.link_arguments("search.ops", "model.block_kwargs", compute_fn=searched_block_kwargs)
        parser.set_defaults({"checkpoint.monitor": None, "checkpoint.save_top_k": 0, "trainer.limit_val_batches": 0})


def meta_net(module: SegModule, **block) -> nn.Module:
    """The module's architecture with another block setting, on the meta device (shapes only, no memory)."""
    kwargs = {**module.net_kwargs(), **block}
    with torch.device("meta"):
        return build_net(module.hparams.arch, len(module.hparams.modalities), len(module.regions), **kwargs)


def provenance(cli: SearchCLI, seconds: float) -> dict:
    options, h, d = cli.config["search"], cli.model.hparams, cli.datamodule.hparams
    net = {k: v for k, v in cli.model.net_kwargs().items() if k not in ("block", "block_kwargs")}
    return {
        "variant": options.variant, "ops": options.ops, "l1": options.l1 if options.variant == "cost" else None,
        "budget": options.budget, "budget_on": options.budget_on if options.budget is not None else None,
        "steps": cli.trainer.global_step, "epochs": cli.trainer.current_epoch, "fit_seconds": round(seconds, 1),
        "seed": cli.config.get("seed_everything"),
        "data": {"root": d.root, "datalist": d.datalist, "modalities": list(d.modalities),
                 "label_convention": d.label_convention, "spacing": d.spacing, "patch_size": list(d.patch_size)},
        "arch": h.arch, "net": net, "medseg_version": medseg.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def search(argv: list[str]) -> int:
    cli = build_cli(SearchCLI, SearchModule, argv, "medseg search")
    options, output, module = cli.config["search"], Path(cli.config["output"]), cli.model
    if output.is_dir():
        raise MedsegError(f"--output={output}: is a folder; give the path of the JSON file to write")
    patch = list(cli.datamodule.hparams.patch_size)
    x = torch.empty(1, len(module.hparams.modalities), *patch, device="meta")
    costs = measure(meta_net(module, block="conv", block_kwargs=None), meta_net(module), SPACES[options.ops], x)
    if options.budget is not None:
        costs.check_budget(options.budget, options.budget_on)  # before spending the search on an impossible budget
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    seconds = time.perf_counter() - start
    if not cli.trainer.is_global_zero:
        return 0
    importance = module.importance()
    splits = (select(costs.layers, importance) if options.budget is None
              else select_within(costs, importance, options.budget, options.budget_on))
    config = configuration(costs.layers, splits, provenance(cli, seconds))
    searched = net_cost(meta_net(module, block_kwargs={"config": config}), x)  # also checks the file fits the net
    write_configuration(output, config)
    minutes, secs = divmod(round(seconds), 60)
    budget = f", budget {options.budget} of the {options.budget_on}" if options.budget is not None else ""
    print(f"CAKES search, {options.variant} variant over '{options.ops}'{budget}: {cli.trainer.global_step} steps "
          f"(this run trained {minutes} min {secs} s)\n\n"
          f"searched channels per op:\n{mix_table(costs.layers, splits)}\n\n"
          f"{cost_table(costs.all_3d, searched, patch)}\n\nconfiguration: {output}\n"
          f"train it with: medseg train … --model.block=cakes --model.block_kwargs.config={output}")
    return 0
