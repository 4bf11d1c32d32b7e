# `make demo` and `make test` set everything up (idempotent; fast the second time), then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedshield-installed
# SecretFlow SPU (Private FLAME's dealer-free option, correlations: cheetah) pins numpy<2 and jax<=0.4.34 and needs
# Python < 3.12, so it gets its own virtualenv; the servers run in it in that mode (fedshield.mpc needs only numpy
# and cryptography there, from src/ on PYTHONPATH).
# scripts/ensure-spu.sh picks python3.11/3.10/3.9 (or $PYTHON_SPU). `make test` builds it when it can and otherwise
# warns: the dealer-free tests then skip, naming `make spu`.
VENV_SPU   := .venv-spu

.PHONY: setup spu spu-optional data demo test bench clean

setup: $(STAMP)

# torch is pinned through constraints.txt in every pip call: an unpinned resolution would pull a multi-GB CUDA build. The flower
# extra is installed too because the default test run includes a real Flower deployment on loopback; the
# traffic extra (pyarrow) because the default test run reads generated NIDS dataset files.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,flower,traffic]"
	touch $(STAMP)

spu:
	@bash scripts/ensure-spu.sh

spu-optional:
	@bash scripts/ensure-spu.sh --optional

data: setup
	@bash scripts/ensure-data.sh $(PY)

demo: data
	$(VENV)/bin/fedshield demo

test: data spu-optional
	$(PY) -m pytest -q

bench: data
	$(PY) benchmarks/round_time.py

clean:
	rm -rf $(VENV) $(VENV_SPU) runs .pytest_cache
