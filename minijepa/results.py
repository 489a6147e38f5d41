"""The repo's measured results, read back for the notebooks: the markdown tables of docs/results.md.

    tables = markdown_tables()          # every table of docs/results.md, in order
    t = tables[0]                       # {"heading", "title", "columns", "rows": {row label: {column: cell}}}
    mean, std = mean_std(t["rows"]["pixel targets"]["kNN"])      # "69.2 ± 0.7" -> (69.2, 0.7)

docs/results.md holds the tables that `python -m minijepa.studies` printed; reading them back lets a notebook show
and compare them without typing their numbers in again. A table of docs/results.md whose header line is also a study's
(docs/studies/<study>.md) must be that study's table, row for row: `python -m minijepa.results` lists the ones that
are not, `python -m minijepa.results --sync` copies the studies' tables in.
"""
from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results.md"
STUDIES = RESULTS.parent / "studies"


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


def table_blocks(path: str | Path) -> dict[str, tuple[int, int]]:
    """Where each table of a markdown file sits: {header line: (first line, one past the last line)}."""
    lines = Path(path).read_text().splitlines()
    blocks = {}
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            blocks[line] = (i, end)
    return blocks


def study_tables(studies: str | Path = STUDIES) -> dict[str, list[str]]:
    """Every table the studies wrote (docs/studies/*.md), as its lines, by header line."""
    out = {}
    for path in sorted(Path(studies).glob("*.md")):
        lines = path.read_text().splitlines()
        for header, (start, end) in table_blocks(path).items():
            out[header] = lines[start:end]
    return out


def stale_tables(path: str | Path = RESULTS, studies: str | Path = STUDIES) -> list[str]:
    """The header lines of the tables in `path` that differ from the study table with the same header."""
    lines, theirs = Path(path).read_text().splitlines(), study_tables(studies)
    return [h for h, (start, end) in table_blocks(path).items() if h in theirs and lines[start:end] != theirs[h]]


def sync_tables(path: str | Path = RESULTS, studies: str | Path = STUDIES) -> list[str]:
    """Copy each study table into `path` in the place of its stale copy; returns the header lines replaced."""
    lines, theirs = Path(path).read_text().splitlines(), study_tables(studies)
    stale = stale_tables(path, studies)
    for header, (start, end) in sorted(table_blocks(path).items(), key=lambda kv: -kv[1][0]):  # bottom up
        if header in stale:
            lines[start:end] = theirs[header]
    Path(path).write_text("\n".join(lines) + "\n")
    return stale


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Are docs/results.md's tables the studies' tables (docs/studies)?")
    parser.add_argument("--sync", action="store_true", help="copy the studies' tables into docs/results.md")
    if parser.parse_args().sync:
        print("\n".join(["replaced:", *sync_tables()]))
    elif stale := stale_tables():
        raise SystemExit("\n".join(["differ from the studies' tables (python -m minijepa.results --sync):", *stale]))
    else:
        print("docs/results.md: every study table is up to date")
