# fl-mdisc: `make run` (set up + default experiment), `make test` (set up + test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Data root: ../shared/data when it exists (this workplace), else ./data (torchvision downloads there).
FL_MDISC_DATA ?= $(if $(wildcard ../shared/data/cifar10/train.npz),$(abspath ../shared/data),$(CURDIR)/data)
export FL_MDISC_DATA
export FLWR_HOME := $(CURDIR)/.flwr-home
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: setup run test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

run: setup
	$(BIN)/fl-mdisc run $(ARGS)

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf .flwr-home outputs .pytest_cache
