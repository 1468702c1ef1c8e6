# The two commands (see README): `make run` and `make test`.
# Both create or refresh .venv themselves; a second run only redoes what changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.paygate-installed
SOURCES := setup.py pyproject.toml $(shell find codec gateway hsm_sim reconciler netsim proto \
             -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.proto' -o -name '*.json' \
             2>/dev/null | grep -v '_pb2')

.PHONY: run test build lint bench clean

# `make run`: the whole stack on embedded defaults (data in var/), the demo payments
# against it, and it keeps serving until Ctrl-C. UP_FLAGS=--exit-after-demo stops after.
run: $(BUILT)
	$(BIN)/paygate up --demo $(UP_FLAGS)

test: $(BUILT)
	$(BIN)/pytest

build: $(BUILT)

bench: $(BUILT)
	$(BIN)/python bench/codec.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Build requirements (pinned in pyproject.toml), runtime and test dependencies.
$(DEPS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $$($(BIN)/python -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print(" ".join(repr(r) for r in d["build-system"]["requires"] + d["project"]["dependencies"] + d["project"]["optional-dependencies"]["test"]))' | tr -d "'")
	touch $@

# The distribution itself, built in-tree without isolation (so rebuilds are incremental).
$(BUILT): $(DEPS) $(SOURCES)
	$(BIN)/python -m pip install -q --no-build-isolation --no-deps .
	touch $@

clean:
	rm -rf build $(VENV) codec/_kernel.c codec/*.so codec/_kernel.html *.egg-info
