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
