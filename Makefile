# Two commands for a fresh clone: `make demo` and `make test`. Both do their own set-up.
# uv is installed into .tools/ (pinned) and creates .venv/ from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install browser lint typecheck check-schema bench bench-batch samples clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/gateway demo

samples: install  # the sample subject access and evidence packs in docs/samples/, from a fresh demo
	docs/samples/make.sh

lint: install
	$(BIN)/ruff check policies resolvers schema gateway tests bench
	$(PYTHON) .ci/check_layers.py

typecheck: install
	$(BIN)/mypy

check-schema: install
	$(BIN)/gateway schema export --check

# The console's browser tests drive Debian's chromium through its chromedriver: installed here when
# missing and this is a Debian machine we may install on (root); otherwise they skip, or fail under CI=true.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)); \
	  else \
	    echo "note: no chromium/chromedriver (apt-get install chromium chromium-driver): browser tests will skip"; \
	  fi; \
	fi

# The whole suite, on SQLite and on PostgreSQL (GATEWAY_TEST_POSTGRES_URL, default the local server),
# one pytest worker per core (pytest-xdist): each worker makes its own databases.
test: install browser lint typecheck check-schema
	$(BIN)/pytest -n auto

# The gateway against a floor of the same SQL and JSON, from outside (PostgreSQL from
# GATEWAY_TEST_POSTGRES_URL; needs wrk and taskset: apt-get install wrk). Other benchmarks: bench/.
bench: install
	$(BIN)/python -m bench.speed

# A partner's batch of 10,000 reports, on PostgreSQL and SQLite: its progress and time (bench/batch.py).
bench-batch: install
	$(BIN)/python -m bench.batch

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
