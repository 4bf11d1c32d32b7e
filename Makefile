# `make demo` and `make test` set everything up (idempotent; fast the second time), then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedshield-installed

.PHONY: setup data demo test bench clean

setup: $(STAMP)

# torch is pinned through constraints.txt in every pip call: an unpinned resolution would pull a multi-GB CUDA build. The flower
# extra is installed too because the default test run includes a real Flower deployment on loopback; the
# traffic extra (pyarrow) because the default test run reads generated NIDS dataset files.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,flower,traffic]"
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
