"""From path importances |γ| to a configuration: per layer the top C_out paths, optionally under a global budget.

Without a budget this is the paper's prune step (docs/specs/blocks-spec.md §3.6): per layer, the C_out paths with the
largest |γ|, ties to the cheaper op, then the lower op and channel index (K6), so Σ c_op = C_out in every layer.

With a budget (beyond the paper) the choice is a multiple-choice knapsack over the whole network, solved by its
Lagrangian relaxation: path score = |γ| / max |γ| of its layer − λ · cost(path) / cost(all-3D net), per layer the
top C_out scores, λ bisected to the smallest value that meets the budget. The total cost falls monotonically with λ,
and a large enough λ puts every channel on its cheapest op (the floor `NetCost.check_budget` tests against).
"""

import numpy as np

from medseg.search.cost import Layer, Metric, NetCost, Split

BISECTION_STEPS = 60


def pick(importance: np.ndarray, cost: np.ndarray, c_out: int, lam: float = 0.0) -> np.ndarray:
    """(n_ops,) channels per op: the c_out paths of highest |γ|/max|γ| − λ·cost from importance (n_ops, C_out)."""
    n_ops, width = importance.shape
    score = importance / max(float(importance.max()), 1e-12) - lam * cost[:, None]  # (n_ops, C_out)
    op = np.repeat(np.arange(n_ops), width)  # (n_ops·C_out,) op of each path, in score.ravel() order
    order = np.lexsort((op, cost[op], -score.ravel()))  # by score, then cheaper op, then op index; stable: channel
    return np.bincount(op[order[:c_out]], minlength=n_ops)


def layer_split(layer: Layer, importance: np.ndarray, cost: np.ndarray, lam: float = 0.0) -> Split:
    counts = pick(importance, cost, layer.c_out, lam)
    return {op: int(c) for op, c in zip(layer.ops, counts, strict=True)}


def select(layers: list[Layer], importance: dict[str, np.ndarray]) -> dict[str, Split]:
    """{layer name: {op: channels}}: per layer the C_out paths of largest |γ| (the paper's prune step)."""
    return {layer.name: layer_split(layer, importance[layer.name], layer.path_cost("params")) for layer in layers}


def select_within(costs: NetCost, importance: dict[str, np.ndarray], budget: float,
                  metric: Metric = "flops") -> dict[str, Split]:
    """Like `select`, but the network's `metric` stays ≤ budget × that of the all-3D network (module docstring)."""
    costs.check_budget(budget, metric)
    scale = costs.all_3d[metric]
    path_costs = {layer.name: layer.path_cost(metric) / scale for layer in costs.layers}

    def at(lam: float) -> dict[str, Split]:
        return {layer.name: layer_split(layer, importance[layer.name], path_costs[layer.name], lam)
                for layer in costs.layers}

    target = budget * scale
    gaps = [np.diff(np.unique(c)) for c in path_costs.values()]
    gaps = [g.min() for g in gaps if g.size]
    lo, hi = 0.0, 2.0 / min(gaps) if gaps else 0.0  # at hi, any cheaper op outscores any dearer one (|Δu| ≤ 1)
    if costs.total(at(lo), metric) <= target:
        return at(lo)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if costs.total(at(mid), metric) <= target else (mid, hi)
    return at(hi)


def op_mix(splits: dict[str, Split]) -> dict[str, float]:
    """Share of all searched channels on each op."""
    counts: dict[str, int] = {}
    for split in splits.values():
        for op, c in split.items():
            counts[op] = counts.get(op, 0) + c
    total = sum(counts.values())
    return {op: c / total for op, c in counts.items()}
