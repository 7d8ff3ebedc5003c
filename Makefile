# The two commands of the README: `make setup` (virtualenv, tools, offline plan of dev)
# and `make test` (the whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: setup test plan bench clean

setup: $(VENV)/.installed .tools/bin/helm
	@# The pinned upstream charts the plan and tests render: ../shared/charts-src when it is
	@# beside the project, else `helm pull` into .cache/charts (needs the chart repositories).
	$(PY) -m sophia_infra charts --pull || echo "setup: some charts have no source; the rendering checks will say so"
	$(PY) -m sophia_infra plan --stack $(STACK)

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.tools/bin/helm: scripts/install-tools.sh
	scripts/install-tools.sh

test: $(VENV)/.installed .tools/bin/helm
	PATH="$(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

plan: $(VENV)/.installed
	$(PY) -m sophia_infra plan --stack $(STACK)

clean:
	rm -rf build .pytest_cache

bench: $(VENV)/.installed
	$(PY) -m sophia_infra.bench
