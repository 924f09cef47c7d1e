"""The evidence table of experiments/compare_blocks.py: per budget × variant, Dice mean ± sd over seeds (each seed's
score the mean over the held-out cases) with parameters, FLOPs, training s/step and predict time.

Writes <out>/results.json (every run and the summary rows), results.csv, table.md (for the README) and
dice_vs_cost.png (whole-tumour Dice against parameters and against predict time). Rerun alone to redraw:
    python experiments/compare_report.py runs/compare
"""

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's medseg
from medseg.blocks import BLOCKS  # noqa: E402
from medseg.utils.files import atomic_write  # noqa: E402

REGIONS = ["wt", "tc", "et"]


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*/seed*/result.json"))]


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (budget, variant): equal steps first, then conv and the blocks in registry order, ablations last."""
    keys = list(dict.fromkeys((r["budget"], r["variant"]) for r in runs))
    rows = []
    for budget, variant in keys:
        group = [r for r in runs if (r["budget"], r["variant"]) == (budget, variant)]
        row = {"budget": budget, "variant": variant, "seeds": sorted(r["seed"] for r in group),
               "params": group[0]["params"], "gflop": group[0]["flops"] / 1e9,
               "steps": statistics.fmean(r["steps"] for r in group),
               "s_per_step": statistics.fmean(r["s_per_step"] for r in group),
               "predict_s": statistics.fmean(r["predict_s"] for r in group)}
        for region in REGIONS:
            row[f"dice_{region}"], row[f"dice_{region}_sd"] = mean_sd([r["dice"][region] for r in group])
        rows.append(row)
    blocks = list(BLOCKS)

    def rank(row: dict) -> tuple:
        arch, _, block = row["variant"].partition("+")[0].partition("-")
        return ({"steps": 0, "time": 1}.get(row["budget"], 2), "+" in row["variant"], arch,
                blocks.index(block) if block in blocks else len(blocks), row["variant"])

    return sorted(rows, key=rank)


def dice_cell(row: dict, region: str) -> str:
    sd = row[f"dice_{region}_sd"]
    return f"{row[f'dice_{region}']:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def markdown(rows: list[dict], caption: str) -> str:
    head = ("| budget | variant | seeds | Dice WT | Dice TC | Dice ET | params | GFLOP / patch | train s/step | "
            "steps | predict s / case |\n|---|---|---:|---|---|---|---:|---:|---:|---:|---:|")
    lines = [f"| {r['budget']} | {r['variant']} | {len(r['seeds'])} | {dice_cell(r, 'wt')} | {dice_cell(r, 'tc')} | "
             f"{dice_cell(r, 'et')} | {r['params']:,} | {r['gflop']:.2f} | {r['s_per_step']:.2f} | "
             f"{r['steps']:.0f} | {r['predict_s']:.1f} |" for r in rows]
    return "\n".join([head, *lines, "", caption, ""])


def caption(runs: list[dict]) -> str:
    """Budget, seeds, runs and the conditions, from the runs themselves (so a redraw states the same)."""
    seeds = sorted({r["seed"] for r in runs})
    steps = sorted({r["steps"] for r in runs if r["budget"] == "steps"})
    time_steps = [r["steps"] for r in runs if r["budget"] == "time"]
    timed = [r["train_s"] / 60 for r in runs if r["budget"] == "time"]
    minutes = f"{statistics.median(timed):.1f} min" if timed else ""
    threads = sorted({r["threads"] for r in runs})
    cases = sorted(next(iter(runs))["cases"]) if runs else []
    patches = sorted({r["patches_per_step"] for r in runs})
    budgets = []
    if steps:
        budgets.append(f"equal steps ({', '.join(map(str, steps))} steps, {'/'.join(map(str, patches))} patch(es) "
                       "per step)")
    if timed:
        budgets.append(f"equal wall time ({minutes} of training after data caching, {min(time_steps)}–"
                       f"{max(time_steps)} steps reached)")
    return (f"{len(runs)} runs; seeds {seeds}; budgets: {' and '.join(budgets)}; torch threads per run "
            f"{threads}. Dice: mean ± sd over seeds of each seed's mean over the held-out cases {cases}, predicted "
            "with the last checkpoint on their native grid by `medseg predict`. Params and GFLOP: the inference net "
            "(one patch forward); s/step and predict s: wall time on a shared CPU.")


def plot(rows: list[dict], path: Path) -> None:
    """WT Dice (± sd over seeds) against parameters and against predict time; one colour per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for budget, colour in (("steps", "tab:blue"), ("time", "tab:orange")):
        sub = [r for r in rows if r["budget"] == budget]
        if not sub:  # a budget that did not run gets no legend entry
            continue
        for ax, key in zip(axes, ("params", "predict_s"), strict=True):
            ax.errorbar([r[key] for r in sub], [r["dice_wt"] for r in sub], [r["dice_wt_sd"] or 0 for r in sub],
                        fmt="o", color=colour, capsize=3, label=f"equal {budget}")
            for r in sub:
                ax.annotate(r["variant"].removeprefix("unet-"), (r[key], r["dice_wt"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters (log)")
    axes[1].set_xlabel("predict time per held-out case (s, CPU)")
    axes[0].set_ylabel("whole-tumour Dice, held-out (mean ± sd over seeds)")
    axes[0].legend()
    fig.suptitle("Do efficient blocks keep Dice?")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=90))
    plt.close(fig)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_csv(path: Path, rows: list[dict]) -> None:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows)

    atomic_write(path, write)


def write_report(out: Path) -> list[dict]:
    runs = load_runs(out)
    if not runs:
        print(f"{out}: no finished runs to report", file=sys.stderr)
        return []
    rows = summarise(runs)
    text = caption(runs)
    write_text(out / "results.json", json.dumps({"caption": text, "summary": rows, "runs": runs}, indent=1))
    write_csv(out / "results.csv", rows)
    table = markdown(rows, text)
    write_text(out / "table.md", table)
    plot(rows, out / "dice_vs_cost.png")
    print(table)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the compare_blocks.py output folder")
    write_report(parser.parse_args().out)
