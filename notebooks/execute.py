"""Execute notebooks in place, top to bottom, as `make notebooks` does: `python notebooks/execute.py NB [NB ...]`.

The committed outputs come from this (in full mode: MINIJEPA_QUICK unset). What a widget shows is saved as the cell's
output, as a static page (GitHub) shows it: nbclient's imitation of the Output widget is switched off, because it
fails in the background on the mask explorer of notebook 02 and then waits forever. No widget state is saved: it is
large, and GitHub does not render widgets; where a static page would print the widget's Python repr
(`VBox(children=...`), the saved output says how to use it instead (WIDGET_TEXT).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELL_TIMEOUT_S = 3600  # the longest cell (notebook 09's training) takes about 20 CPU minutes
WIDGET = "application/vnd.jupyter.widget-view+json"
WIDGET_TEXT = "(an interactive widget: run this cell in JupyterLab to use it; the figure above is its first view)"


def execute(path: Path) -> None:
    """Run the notebook at `path` in a fresh kernel, in its own folder, and save it with its outputs."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, store_widget_state=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.widget_registry = {}  # no Output-widget imitation: what a widget prints stays in its cell's outputs
    client.execute()
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if WIDGET in output.get("data", {}):
                output["data"]["text/plain"] = WIDGET_TEXT
    nbformat.write(nb, path)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python notebooks/execute.py NOTEBOOK.ipynb [NOTEBOOK.ipynb ...]")
    for name in sys.argv[1:]:
        print(f"executing {name}", flush=True)
        execute(Path(name))
