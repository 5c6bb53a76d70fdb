# Two commands for a fresh clone: `make demo` and `make test`. Both do their own set-up.
# uv is installed into .tools/ (pinned) and creates .venv/ from uv.lock.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint typecheck check-schema bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --quiet
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/gateway demo

lint: install
	$(BIN)/ruff check policies resolvers schema gateway tests bench
	$(PYTHON) .ci/check_layers.py

typecheck: install
	$(BIN)/mypy

check-schema: install
	$(BIN)/gateway schema export --check

# The whole suite, on SQLite and on PostgreSQL (GATEWAY_TEST_POSTGRES_URL, default the local server),
# one pytest worker per core (pytest-xdist): each worker makes its own databases.
test: install lint typecheck check-schema
	$(BIN)/pytest -n auto

# The gateway against a floor of the same SQL and JSON, from outside (PostgreSQL from
# GATEWAY_TEST_POSTGRES_URL; needs wrk and taskset: apt-get install wrk). Other benchmarks: bench/.
bench: install
	$(BIN)/python -m bench.speed

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
