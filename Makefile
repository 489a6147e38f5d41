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

# re-execute every notebook in full mode, in place (what the committed outputs come from), in name order: 07 reads
# what 04 saves, 11 the saved outputs of 05-10, so they run after them
notebooks: setup
	$(PY) notebooks/execute.py notebooks/*.ipynb

clean:
	rm -rf runs .pytest_cache
