# The two commands of the README. Both create (or reuse) .venv/ and install vidgpt2 there, editable, with test extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to a pair that works together; override for other platforms, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench bench-quick lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## demo: the main job (synthesise clips, train a small model on CPU, evaluate vs a text-only baseline, caption)
demo: $(STAMP)
	$(VENV)/bin/vidgpt2 demo --output-dir outputs/demo

## test: the offline test suite (tiny models; slow tests excluded, run them with `make test-all`)
test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs
