# The two commands (see README): `make run` and `make test`.
# Both create or refresh .venv themselves; a second run only redoes what changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
BUILT  := $(VENV)/.paygate-installed
# The JS SDK's dev dependencies (playwright-core, pinned in sdk/js/package-lock.json);
# the browser is Debian's chromium (.ci/run installs it), never a downloaded one.
NPM_DEPS := sdk/js/node_modules/.paygate-npm-ci
SOURCES := setup.py pyproject.toml $(shell find codec gateway hsm_sim reconciler netsim proto \
             -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.proto' -o -name '*.json' \
             2>/dev/null | grep -v '_pb2') \
           $(shell find sdk/js/src gateway/edge/checkout_assets -type f 2>/dev/null)

.PHONY: run test build lint bench screenshots clean

# `make run`: the whole stack on embedded defaults (data in var/), the demo payments
# against it, and it keeps serving until Ctrl-C. UP_FLAGS=--exit-after-demo stops after.
run: $(BUILT)
	$(BIN)/paygate up --demo $(UP_FLAGS)

test: $(BUILT) $(NPM_DEPS)
	$(BIN)/pytest

build: $(BUILT)

# Refresh the checkout screenshots the README shows (the browser test, writing into
# sdk/js/screenshots; `make test` writes them to a temporary folder instead).
screenshots: $(BUILT) $(NPM_DEPS)
	cd sdk/js && PAYGATE_SCREENSHOTS=screenshots PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
		node --test test/checkout.browser.test.mjs

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

$(NPM_DEPS): sdk/js/package.json sdk/js/package-lock.json
	cd sdk/js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	touch $@

clean:
	rm -rf build $(VENV) codec/_kernel.c codec/*.so codec/_kernel.html *.egg-info sdk/js/node_modules
