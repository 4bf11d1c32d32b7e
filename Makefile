# `make demo` and `make test` set everything up (idempotent; fast the second time), then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedshield-installed
# SecretFlow SPU (Private FLAME's dealer-free option, correlations: cheetah) pins numpy<2 and jax<=0.4.34 and needs
# Python < 3.12, so it gets its own virtualenv; the servers run in it in that mode (fedshield.mpc needs only numpy
# and cryptography there, from src/ on PYTHONPATH).
PYTHON_SPU ?= python3.11
VENV_SPU   := .venv-spu
STAMP_SPU  := $(VENV_SPU)/.fedshield-spu-installed

.PHONY: setup spu data demo test bench clean

setup: $(STAMP)

# torch is pinned through constraints.txt in every pip call: an unpinned resolution would pull a multi-GB CUDA build. The flower
# extra is installed too because the default test run includes a real Flower deployment on loopback; the
# traffic extra (pyarrow) because the default test run reads generated NIDS dataset files.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev,flower,traffic]"
	touch $(STAMP)

spu: $(STAMP_SPU)

$(STAMP_SPU):
	$(PYTHON_SPU) -m venv $(VENV_SPU)
	$(VENV_SPU)/bin/python -m pip install -q --disable-pip-version-check "spu==0.9.5" "numpy<2" "jax<=0.4.34" \
		"jaxlib<=0.4.34" "cryptography>=41"
	touch $(STAMP_SPU)

data: setup
	@bash scripts/ensure-data.sh $(PY)

demo: data
	$(VENV)/bin/fedshield demo

test: data spu
	$(PY) -m pytest -q

bench: data
	$(PY) benchmarks/round_time.py

clean:
	rm -rf $(VENV) $(VENV_SPU) runs .pytest_cache
