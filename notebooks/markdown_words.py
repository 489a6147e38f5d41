"""Words of prose in each notebook: `python notebooks/markdown_words.py` prints a markdown table.

Counted: the markdown cells' words (`inline code` included), without fenced code blocks, math ($...$), tables,
HTML tags, link targets, and everything from the "Exercises" heading on (exercises, their solutions, the references).
The course's budget is about 1,200 words a notebook (one idea each); notebooks/README.md quotes this table.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
STRIP = [r"```.*?```", r"\$\$.*?\$\$", r"\$[^$\n]+\$", r"<[^>\n]+>", r"\]\([^)\n]*\)"]


def prose_words(notebook: Path) -> int:
    """Words of prose in one notebook's markdown, up to its "Exercises" heading."""
    words = 0
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        heading = re.search(r"^#+ .*Exercises", text, re.M)
        if heading:
            text = text[:heading.start()]
        for pattern in STRIP:
            text = re.sub(pattern, " ", text, flags=re.S)
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))
        words += len(re.findall(r"[A-Za-z0-9][\w'’.,%-]*", text))
        if heading:
            break
    return words


def main() -> None:
    rows = [(nb.stem, prose_words(nb)) for nb in sorted(HERE.glob("*.ipynb"))]
    print("| notebook | words of prose |\n|---|---|")
    print("\n".join(f"| {name} | {n:,} |" for name, n in rows))
    print(f"| total | {sum(n for _, n in rows):,} |")


if __name__ == "__main__":
    main()
