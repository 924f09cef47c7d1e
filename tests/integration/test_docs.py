"""The docs: the site builds with `mkdocs build --strict` (a broken link or a missing table record fails it), the
README stays a front page, every relative link in README.md and docs/ points to a file that exists, and the README's
block table says what the committed records say."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README_LIMIT = 14_000  # bytes; the README aims at 12 KB, a front page with the detail in docs/
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def docs_tables():
    """tools/docs_tables.py (the MkDocs hook), loaded from its file."""
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "tools" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(page: Path) -> list[str]:
    """The relative link targets of a Markdown file, outside code (fenced blocks and inline code)."""
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text()))
    targets = [m[1] for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(site)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    record = json.loads((DOCS / "bench" / "cpu-recipe-2026-12-02.json").read_text())
    assert f"{record[0]['params']:,}" in benchmarks  # the table was rendered from the record
    assert "<!-- table:" not in benchmarks
    assert "Unreleased" in (site / "changelog" / "index.html").read_text()  # CHANGELOG.md included


def test_readme_is_a_front_page() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail to a docs/ page"
    assert "## Quick start" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_exist(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"


def test_link_checker_sees_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](a.md) ![b](img/b.png \"t\") [c](https://x.org) [d](#anchor) `[e](e.md)`\n"
                    "```\n[f](f.md)\n```\n[g](g.md#part)\n")
    assert relative_links(page) == ["a.md", "img/b.png", "g.md#part"]


def test_table_marker_renders_and_fails_loudly(tmp_path: Path) -> None:
    tables = docs_tables()
    page = tables.render_markers("x\n<!-- table: compare experiments/blocks-dice-vs-cost.json -->\ny\n")
    assert "| steps | unet-conv |" in page and "<!-- table:" not in page
    with pytest.raises(tables.TableError, match="does not exist"):
        tables.render_markers("<!-- table: bench bench/no-such-record.json -->\n")
    with pytest.raises(tables.TableError, match="unknown table kind"):
        tables.render_markers("<!-- table: chart bench/cpu-recipe-2026-12-02.json -->\n")
    changelog = tables.include_files("# Changelog\n\n<!-- include: ../CHANGELOG.md -->\n")
    assert changelog.startswith("# Changelog\n\n## ") and "<!-- include:" not in changelog
    with pytest.raises(tables.TableError, match="does not exist"):
        tables.include_files("<!-- include: ../NO-SUCH-FILE.md -->\n")


def test_readme_block_table_matches_records() -> None:
    """The README's summary row per block (params ×, FLOPs ×, predict / train-step ×, Dice WT) is the bench record's
    UNet row and the experiment's equal-steps row, so the front page cannot drift from the evidence it links."""
    bench = {r["block"]: r for r in json.loads((DOCS / "bench" / "cpu-recipe-2026-12-02.json").read_text())
             if r["table"] == "net" and r["arch"] == "unet"}
    dice = {r["variant"]: r for r in json.loads((DOCS / "experiments" / "blocks-dice-vs-cost.json").read_text())[
        "summary"] if r["budget"] == "steps"}
    rows = {m[1]: [c.strip() for c in m[2].split("|")]
            for m in re.finditer(r"^\| `(\w+)` \|[^|]*\|(.*)\|$", (REPO / "README.md").read_text(), re.MULTILINE)}
    assert set(rows) == set(bench) == {"conv", "pmscn", "cakes", "sic"}
    for block, (params, flops, times, wt) in rows.items():
        r, d = bench[block], dice[f"unet-{block}"]
        assert params.endswith(f"{r['params_x']:.2f}×") or params.endswith(f"({r['params_x']:.2f}×)"), block
        assert flops == f"{r['flops_x']:.2f}×", block
        assert times == f"{r['time_x']:.2f}× / {r['train_x']:.2f}×", block
        assert wt == f"{d['dice_wt']:.3f} ± {d['dice_wt_sd']:.3f}", block
