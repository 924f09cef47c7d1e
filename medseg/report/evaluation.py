"""`medseg evaluate … --report r.html`: one offline page of the scores, worst cases first.

It holds the mean / SD / median per region, box plots of Dice and HD95 per region (inline SVG drawn here, no
plotting library), a per-case table sorted worst first (lowest mean Dice over the regions) and a per-case x region
table; both sort by any column when its header is clicked. Where predictions were made with `medseg predict
--report FOLDER`, each case links to its page in FOLDER (`case_pages`; by default the report's own folder).
"""

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import medseg
from medseg.report.html import colour, esc
from medseg.utils.files import atomic_write

PLOTTED = ("dice", "hd95")  # the metrics drawn as box plots, when the convention has them
SORT_JS = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, col) => {
    th.style.cursor = "pointer";
    th.addEventListener("click", () => {
      const body = table.tBodies[0], rows = Array.from(body.rows);
      const up = th.dataset.order !== "up";
      th.dataset.order = up ? "up" : "down";
      const key = (r) => { const c = r.cells[col]; const v = c.dataset.v ?? c.textContent; const n = parseFloat(v);
                           return isNaN(n) ? v : n; };
      rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
      rows.forEach((r) => body.appendChild(r));
    });
  });
}
"""


def fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else str(value)


def cell(value: float) -> str:
    """A numeric cell that sorts by its value (inf last)."""
    v = value if math.isfinite(value) else 1e308
    return f'<td class=num data-v="{v}">{fmt(value)}</td>'


def box_plot(values: Mapping[str, Sequence[float]], metric: str) -> str:
    """An inline SVG box plot per region: box from the 25th to 75th percentile, median line, whiskers to the most
    extreme value within 1.5 IQR, every case as a dot. Non-finite values (an empty mask's HD95) are left out and
    counted under the region's name."""
    w, h, pad, top, bottom = 110, 220, 44, 16, 36
    finite = {r: [v for v in vs if math.isfinite(v)] for r, vs in values.items()}
    everything = [v for vs in finite.values() for v in vs]
    low = 0.0
    high = 1.0 if metric == "dice" else max(everything, default=1.0) * 1.05 or 1.0
    y = lambda v: top + (h - top - bottom) * (1 - (v - low) / (high - low))  # noqa: E731
    parts = [f'<svg width="{pad + w * len(values)}" height="{h}" role="img" '
             f'aria-label="{esc(metric)} per region">',
             f'<text x="4" y="12" font-size="12">{esc(metric)}</text>']
    for tick in np.linspace(low, high, 5):
        parts.append(f'<line x1="{pad - 4}" x2="{pad + w * len(values)}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{pad - 6}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.3g}</text>')
    rng = np.random.default_rng(0)
    for i, (region, vs) in enumerate(finite.items()):
        x0, r, g, b = pad + w * i + w / 2, *colour(i)
        missing = len(values[region]) - len(vs)
        label = esc(region) + (f" ({missing} not finite)" if missing else "")
        parts.append(f'<text x="{x0:.1f}" y="{h - 8}" font-size="11" text-anchor="middle">{label}</text>')
        if not vs:
            continue
        q1, med, q3 = np.percentile(vs, [25, 50, 75])
        iqr = q3 - q1
        lo = min(v for v in vs if v >= q1 - 1.5 * iqr)
        hi = max(v for v in vs if v <= q3 + 1.5 * iqr)
        parts += [f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" stroke="#444"/>',
                  f'<rect x="{x0 - 25:.1f}" y="{y(q3):.1f}" width="50" height="{max(y(q1) - y(q3), 1):.1f}" '
                  f'fill="rgb({r},{g},{b})" fill-opacity="0.35" stroke="#444"/>',
                  f'<line x1="{x0 - 25:.1f}" x2="{x0 + 25:.1f}" y1="{y(med):.1f}" y2="{y(med):.1f}" stroke="#000" '
                  'stroke-width="2"/>']
        for v in vs:
            parts.append(f'<circle cx="{x0 + rng.uniform(-18, 18):.1f}" cy="{y(v):.1f}" r="2.5" fill="#222"/>')
    return "".join(parts) + "</svg>"


def case_link(case: str, pages: Path | None, out: Path) -> str:
    """The case name, linked to its prediction page when one exists (relative to the report)."""
    page = pages / f"{case}.html" if pages else None
    if page is None or not page.is_file():
        return esc(case)
    return f'<a href="{esc(Path(os.path.relpath(page, out.parent)).as_posix())}">{esc(case)}</a>'


def worst_first(cases: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Cases by their mean over regions of the first metric (Dice for BraTS), lowest first."""
    def key(case: str) -> float:
        values = [m[next(iter(m))] for m in cases[case].values()]
        finite = [v for v in values if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else -math.inf
    return sorted(cases, key=key)


def write_evaluation_report(result: Mapping, out: Path, case_pages: Path | None = None) -> None:
    """The page described in the module docstring, written atomically."""
    out = Path(out)
    pages = Path(case_pages) if case_pages else out.parent
    cases = result["cases"]
    regions = list(next(iter(cases.values())))
    metrics = list(next(iter(next(iter(cases.values())).values())))
    summary = "".join(f"<tr><td>{esc(r)}</td>" + "".join(
        f"<td class=num>{fmt(s['mean'])} ± {fmt(s['sd'])} (median {fmt(s['median'])})</td>" for s in stats.values())
        + "</tr>" for r, stats in result["summary"].items())
    plots = "".join(box_plot({r: [cases[c][r][m] for c in cases] for r in regions}, m) for m in PLOTTED
                    if m in metrics)
    first = metrics[0]
    head = "".join(f"<th>{esc(r)} {esc(first)}</th>" for r in regions) + (
        "".join(f"<th>{esc(r)} hd95</th>" for r in regions) if "hd95" in metrics and first != "hd95" else "")
    per_case = "".join(
        f"<tr><td>{case_link(c, pages, out)}</td>" + "".join(cell(cases[c][r][first]) for r in regions)
        + ("".join(cell(cases[c][r]["hd95"]) for r in regions) if "hd95" in metrics and first != "hd95" else "")
        + "</tr>" for c in worst_first(cases))
    per_region = "".join(f"<tr><td>{case_link(c, pages, out)}</td><td>{esc(r)}</td>"
                         + "".join(cell(cases[c][r][m]) for m in metrics) + "</tr>"
                         for c in worst_first(cases) for r in regions)
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>medseg evaluate: {len(cases)} cases
</title><style>body{{font-family:system-ui,sans-serif;margin:1.2em}}table{{border-collapse:collapse;margin:.4em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em}}th{{background:#eee}}td.num{{text-align:right;
font-variant-numeric:tabular-nums}}svg{{margin-right:1.5em}}</style></head><body>
<h1>{len(cases)} cases evaluated</h1>
<h2>Per region over cases</h2><table><thead><tr><th>region</th>{"".join(f"<th>{esc(m)}</th>" for m in metrics)}
</tr></thead><tbody>{summary}</tbody></table>
<h2>Box plots</h2><div>{plots}</div>
<h2>Cases, worst first</h2><p>Sorted by the mean {esc(first)} over regions; click a header to sort by it.</p>
<table class="sortable" id="cases"><thead><tr><th>case</th>{head}</tr></thead><tbody>{per_case}</tbody></table>
<h2>Every case and region</h2>
<table class="sortable" id="case-regions"><thead><tr><th>case</th><th>region</th>
{"".join(f"<th>{esc(m)}</th>" for m in metrics)}</tr></thead><tbody>{per_region}</tbody></table>
<p>Made by medseg {esc(medseg.__version__)}.</p><script>{SORT_JS}</script></body></html>"""
    atomic_write(out, lambda p: p.write_text(page))
