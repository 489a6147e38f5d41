"""notebooks/markdown_words.py counts the prose a student reads: markdown words up to the exercises, without code
blocks, math, tables or link targets."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "notebooks" / "markdown_words.py"
spec = importlib.util.spec_from_file_location("markdown_words", SCRIPT)
markdown_words = importlib.util.module_from_spec(spec)
spec.loader.exec_module(markdown_words)


def test_counts_prose_only_up_to_the_exercises(tmp_path):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# Two words\n", "\n", "Three more `words` here.\n",
                                                                  "$x^2 + y$ and [a link](https://example.org)\n"]},
             {"cell_type": "code", "metadata": {}, "source": ["print('not counted')\n"], "outputs": [],
              "execution_count": None},
             {"cell_type": "markdown", "metadata": {}, "source": ["```python\nnot = counted\n```\n",
                                                                  "| a | table |\n", "|---|---|\n", "Last one.\n",
                                                                  "## Exercises\n", "Never counted at all.\n"]}]
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    # "Two words" 2 + "Three more words here." 4 + "and a link" 3 + "Last one." 2
    assert markdown_words.prose_words(nb) == 11


def test_every_notebook_keeps_to_the_budget_and_the_readme_quotes_the_count():
    notebooks = sorted(SCRIPT.parent.glob("*.ipynb"))
    counts = {nb.stem: markdown_words.prose_words(nb) for nb in notebooks}
    over = {name: n for name, n in counts.items() if n > 1200}
    assert not over, f"over the course's budget of 1,200 words of prose: {over}"
    readme = (SCRIPT.parent / "README.md").read_text()
    for name, n in counts.items():
        assert f"| {name} | {n:,} |" in readme, f"notebooks/README.md: update the word count of {name} " \
                                                f"(python notebooks/markdown_words.py)"


def test_every_notebook_is_titled_with_its_own_number_and_listed_in_the_readme():
    """A renumbered notebook keeps its title and the course's table of contents in step with its file name."""
    readme = (SCRIPT.parent / "README.md").read_text()
    for nb in sorted(SCRIPT.parent.glob("*.ipynb")):
        number = nb.stem.split("_")[0]
        title = "".join(json.loads(nb.read_text())["cells"][0]["source"]).splitlines()[0]
        assert title.startswith(f"# {number} · "), f"{nb.name}: its title {title!r} should start with '# {number} · '"
        assert f"`{nb.name}`" in readme, f"notebooks/README.md does not list {nb.name}"
