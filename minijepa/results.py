"""The repo's measured results, read back for the notebooks: the markdown tables of docs/results.md.

    tables = markdown_tables()          # every table of docs/results.md, in order
    t = tables[0]                       # {"heading", "title", "columns", "rows": {row label: {column: cell}}}
    mean, std = mean_std(t["rows"]["pixel targets"]["kNN"])      # "69.2 ± 0.7" -> (69.2, 0.7)

docs/results.md holds the tables that `python -m minijepa.studies` printed; reading them back lets a notebook show
and compare them without typing their numbers in again.
"""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_tables(path: str | Path = RESULTS) -> list[dict]:
    """Every table of a markdown file, in order: the heading it sits under, its first header cell ("title"), the
    other header cells ("columns") and its rows, {first cell: {column: cell text}}."""
    lines = Path(path).read_text().splitlines()
    tables, heading = [], ""
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if not (line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---")):
            continue
        title, *columns = _cells(line)
        rows = {}
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            label, *values = _cells(row)
            rows[label] = dict(zip(columns, values))
        tables.append(dict(heading=heading, title=title, columns=columns, rows=rows))
    return tables


def mean_std(cell: str) -> tuple[float, float]:
    """A table cell as numbers: "80.7 ± 1.2" -> (80.7, 1.2), "80.7" (one seed) -> (80.7, 0.0)."""
    mean, _, std = cell.partition("±")
    try:
        return float(mean), float(std or 0.0)
    except ValueError:
        raise ValueError(f"table cell {cell!r} is neither a number nor 'mean ± std'") from None
