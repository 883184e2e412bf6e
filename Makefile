# The two commands a newcomer runs on a fresh machine (see README.md):
#   make run    the whole pipeline on the bundled simulator (no API key, no Docker)
#   make test   install everything, start real Kafka and MarketStore, run the tests
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

FUZZ_SECONDS ?= 60

.PHONY: run test test-fast lint typecheck fuzz

# schemas/_native.c is compiled by the install (an optional C extension)
$(INSTALLED): pyproject.toml schemas/_native.c
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	@# with MASSIVE_FETCHER_REQUIRE_NATIVE=1 (CI, the image) a failed compile stops here
	$(VENV)/bin/python -c 'import schemas.native'
	touch $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/massive-fetcher run

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

# the packages and settings are in pyproject.toml ([tool.mypy])
typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

# The tests that need no real server (the `integration` marker comes from the fixtures),
# on both cores: they wait on subprocesses more than they compute.
test-fast: lint
	$(VENV)/bin/pytest -q -m 'not integration' -n 2

# The compiled paths under AddressSanitizer + UBSan, on seeded random input, for a while.
fuzz: $(INSTALLED)
	$(VENV)/bin/python -m tests.support.fuzz_native --seconds $(FUZZ_SECONDS)

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: lint typecheck
	$(VENV)/bin/pytest -ra --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc
