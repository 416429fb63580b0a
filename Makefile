# cbserver: `make run` runs the service, `make test` runs every test.
# Both set up what they need first: Debian packages, the virtualenv, Asterisk.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test test-unit test-e2e lint format translations prompts bench bench-scheduler deps system-deps asterisk clean

run: deps asterisk
	$(BIN)/cbserver run --demo

test: deps asterisk
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: deps
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: deps asterisk
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

# Benchmarks print figures; they are not tests and never fail a build on timing.
bench: deps asterisk
	$(BIN)/python -m bench.dispatch_latency --count 100 --rate 20

# An hour: 100,000 booked requests. BENCH_DATABASE_URL=postgresql+psycopg://… to use PostgreSQL.
bench-scheduler: deps
	$(BIN)/python -m bench.scheduler $(if $(BENCH_DATABASE_URL),--database-url $(BENCH_DATABASE_URL))

lint: deps
	$(BIN)/ruff check cbserver tests bench
	$(BIN)/ruff format --check cbserver tests bench
	$(BIN)/mypy

format: deps
	$(BIN)/ruff check --fix cbserver tests bench
	$(BIN)/ruff format cbserver tests bench

# After changing visitor-facing text: extract it, merge it into each language, compile.
translations: deps
	$(BIN)/pybabel extract -F babel.cfg -k _l -k _ --no-location --sort-output \
		-o cbserver/translations/messages.pot .
	$(BIN)/pybabel update -i cbserver/translations/messages.pot -d cbserver/translations \
		--ignore-obsolete
	$(BIN)/pybabel compile -d cbserver/translations

# After changing a prompt's text in asterisk-conf/sounds/make-prompts (needs espeak-ng, sox).
prompts:
	asterisk-conf/sounds/make-prompts

deps: system-deps $(VENV)/.installed

system-deps:
	@PYTHON=$(PYTHON) deploy/install-system-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Finds an Asterisk >= 20 on PATH, or builds the cached Debian sid root once (about a minute).
asterisk: deps
	$(BIN)/cbserver asterisk provision

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
