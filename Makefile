# make run: the service on ./config.toml, watching ./inbox.  make test: the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A package index for torch and torchvision alone, e.g. PyTorch's CPU builds on a machine without a GPU:
#   make run TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup run test soak bench check clean

setup: $(STAMP)

# Re-install when the dependency list changes; the package itself is editable.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install --disable-pip-version-check -q --index-url '$(TORCH_INDEX)' torch torchvision)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	@touch $(STAMP)

run: setup
	$(PY) -m daemon run --config config.toml

check: setup
	$(PY) -m daemon check --config config.toml

# The import contracts in pyproject.toml first (which room of daemon/ may import which; no cycles).
# pytest exits 5 when it collected nothing: that must fail, never pass vacuously.
test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

soak: setup
	$(PY) -m pytest -q --soak tests/reliability

bench: setup
	$(PY) bench/model_bench.py
	$(PY) bench/service_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
