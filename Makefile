# The two commands a newcomer runs on a fresh machine (see README.md):
#   make run    the whole pipeline on the bundled simulator (no API key, no Docker)
#   make test   install everything, start real Kafka and MarketStore, run the tests
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test lint

# schemas/_native.c is compiled by the install (an optional C extension)
$(INSTALLED): pyproject.toml schemas/_native.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/massive-fetcher run

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: lint
	$(VENV)/bin/pytest -ra --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc
