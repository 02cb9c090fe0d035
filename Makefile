# Two commands on a fresh machine: `make test` and `make demo`. Setup is idempotent: the stamp
# file is only rebuilt when setup.cfg changes, so a second run installs nothing.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Quiet install; this machine's pip config names local mirrors that may not exist: drop those warnings.
PIP    := quiet_pip() { $(PY) -m pip install -q --progress-bar off "$$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; }; }; quiet_pip
# The CPU build of torch comes from local disk with an exact pin; a looser spec pulls a CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup test demo demo-vlm wheel protos lint bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pip, $(TORCH) and shardforge[dev] into $(VENV)"
	@$(PIP) --upgrade pip
	@$(PIP) $(TORCH)
	@$(PIP) -e '.[dev]'
	touch $(STAMP)

# includes tests/packaging/test_wheel.py: the wheel built, installed into a fresh venv outside
# the repository, and the quick demo run from there (offline: dependencies come from $(VENV))
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup

demo: setup
	$(VENV)/bin/shardforge demo

# the vision-language demo step (about 6 more minutes on 2 cores)
demo-vlm: setup
	$(VENV)/bin/shardforge demo --steps vlm

wheel: setup
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

protos: setup
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. shardforge/protos/*.proto

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/records_bench.py --quick

clean:
	rm -rf $(VENV) build dist *.egg-info
