# `make demo` and `make test` set everything up (idempotent; fast the second time), then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedshield-installed

.PHONY: setup data demo test bench clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned resolution would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

data: setup
	@bash scripts/ensure-data.sh $(PY)

demo: data
	$(VENV)/bin/fedshield demo

test: data
	$(PY) -m pytest -q

bench: data
	$(PY) benchmarks/round_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
