# Two commands do everything on a fresh machine: `make demo` and `make test` (both run `setup` first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned, so that installing the package never pulls in another build
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test demo bench gpu-check lab notebooks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: setup
	MINIJEPA_QUICK=1 $(PY) -m pytest --nbval-lax --nbval-cell-timeout=600

demo: setup
	$(PY) -m minijepa.demo

bench: setup
	$(PY) -m minijepa.bench

# every CUDA path in one command (benchmark, training, evaluation, torchrun, Ctrl-C + resume); says so without a GPU
gpu-check: setup
	$(PY) -m minijepa.gpucheck

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# re-execute every notebook in full mode, in place (what the committed outputs come from), in name order: 10 reads
# the saved outputs of 05-09, so it runs after them
notebooks: setup
	for nb in notebooks/*.ipynb; do $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.store_widget_state=False $$nb || exit 1; done

clean:
	rm -rf runs .pytest_cache
