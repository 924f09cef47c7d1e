"""MkDocs hook: the benchmark and experiment pages' tables, rendered at build time from the committed JSON records
by the same code that prints them (`medseg bench`, experiments/compare_report.py), so a page cannot disagree with its
record and no number in those tables is typed by hand.

A page asks for a table with a marker line (the path is relative to docs/):

    <!-- table: bench bench/cpu-recipe-2026-12-02.json -->
    <!-- table: compare experiments/blocks-dice-vs-cost.json -->

A marker whose kind or record is unknown fails the build. `<!-- include: ../CHANGELOG.md -->` includes a Markdown
file from outside docs/ from its first `## ` heading on (the changelog page). `python tools/docs_tables.py PAGE.md`
prints a page as the hook renders its tables.
"""

import importlib.util
import json
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = re.compile(r"^<!-- table: (?P<kind>\S+) (?P<record>\S+) -->$", re.MULTILINE)
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.MULTILINE)
COMPARE_REPORT = REPO / "experiments" / "compare_report.py"  # the block comparison's report (not a package module)


class TableError(Exception):
    """A marker that names an unknown kind or a record that does not exist."""


def bench_table(records: list[dict]) -> str:
    """What `medseg bench` printed for these records: its header (conditions) and its tables."""
    from medseg.bench.run import IN_CHANNELS
    from medseg.bench.tables import add_ratios, header, report

    first = records[0]
    time_key = f"{first['device']}_ms"
    add_ratios(records, time_key)
    text = header(records, tuple(first["shape"]), first["patch"], first["train_batch"], IN_CHANNELS)
    conditions = "\n".join(textwrap.fill(line, 116, subsequent_indent="  ") for line in text.splitlines())
    return f"```text\n{conditions}\n\n{report(records, time_key)}\n```"


def compare_module() -> ModuleType:
    """experiments/compare_report.py, loaded from its file."""
    spec = importlib.util.spec_from_file_location("compare_report", COMPARE_REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_table(record: dict) -> str:
    """The Dice-vs-cost table that compare_report.py writes (table.md) from its results.json."""
    return compare_module().markdown(record["summary"], record["caption"])


RENDERERS = {"bench": bench_table, "compare": compare_table}


def render_markers(markdown: str) -> str:
    """The page with every table marker replaced by its rendered table."""
    if str(REPO) not in sys.path:  # this checkout's medseg, also when mkdocs runs from elsewhere
        sys.path.insert(0, str(REPO))

    def table(match: re.Match) -> str:
        kind, record = match["kind"], DOCS / match["record"]
        if kind not in RENDERERS:
            raise TableError(f"unknown table kind {kind!r} (known: {', '.join(RENDERERS)})")
        if not record.is_file():
            raise TableError(f"table record {record} does not exist")
        return RENDERERS[kind](json.loads(record.read_text()))

    return MARKER.sub(table, markdown)


def include_files(markdown: str) -> str:
    """The page with every include marker replaced by that file's sections (from its first `## ` heading)."""

    def include(match: re.Match) -> str:
        path = DOCS / match["path"]
        if not path.is_file():
            raise TableError(f"included file {path} does not exist")
        text = path.read_text()
        start = text.find("\n## ")
        return text[start + 1:] if start >= 0 else text

    return INCLUDE.sub(include, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """MkDocs event: render the page's table markers."""
    from mkdocs.exceptions import PluginError

    try:
        return render_markers(include_files(markdown))
    except TableError as e:
        raise PluginError(f"{page.file.src_path}: {e}") from e


if __name__ == "__main__":
    print(render_markers(Path(sys.argv[1]).read_text()))
