# The only entry points a newcomer needs: make demo, make test (and make bench, make lint).
# make test-floor runs the suite again on the oldest supported redis-py (CI runs both).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
SUM    := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ARGS   ?=

# One venv, one stamp per extras set: `make demo` installs only what the demo needs, and a later
# `make test` or `make bench` adds its own tools to the same venv. A changed pyproject.toml
# makes every stamp stale.
DEMO_STAMP  := $(VENV)/.installed-demo-$(SUM)
TEST_STAMP  := $(VENV)/.installed-test-$(SUM)
BENCH_STAMP := $(VENV)/.installed-bench-$(SUM)
extras_demo  := demo,cli
extras_test  := dev,bench
extras_bench := bench

# The oldest redis-py the library supports is written once, in pyproject's "redis[hiredis]>=X"
# line; `make test-floor` runs the suite on exactly that version in a venv of its own.
REDIS_FLOOR := $(shell sed -n 's/^ *"redis\[hiredis\]>=\([0-9.]*\)".*/\1/p' pyproject.toml)
FLOOR_VENV  := .venv-floor
FLOOR_PY    := $(FLOOR_VENV)/bin/python
FLOOR_STAMP := $(FLOOR_VENV)/.installed-$(SUM)

.PHONY: demo test test-floor lint bench bench-smoke system-deps clean

$(VENV)/.installed-%-$(SUM): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[$(extras_$*)]'
	rm -f $(VENV)/.installed-$*-* && touch $@

$(FLOOR_STAMP): pyproject.toml
	@test -n "$(REDIS_FLOOR)" || { echo 'no "redis[hiredis]>=X" line in pyproject.toml' >&2; exit 1; }
	test -x $(FLOOR_PY) || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip -q --disable-pip-version-check install -e '.[dev,bench]' 'redis[hiredis]==$(REDIS_FLOOR)'
	rm -f $(FLOOR_VENV)/.installed-* && touch $@

# Debian packages the tests drive for real: redis-server 7.x and Chromium.
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server chromium >/dev/null; \
	  else echo "need redis-server and chromium (apt-get install redis-server chromium)" >&2; exit 1; fi; }

# Flags go through ARGS: make demo ARGS="--embedded --port 9000"
demo: $(DEMO_STAMP)
	$(PY) -m redis_streaming demo $(ARGS)

test: $(TEST_STAMP) system-deps
	$(PY) -m pytest

# The suite on the declared redis-py floor (the browser test only drives the demo page: skipped).
test-floor: $(FLOOR_STAMP) system-deps
	$(FLOOR_PY) -c 'import redis; assert redis.__version__ == "$(REDIS_FLOOR)", redis.__version__'
	$(FLOOR_PY) -m pytest -p no:cacheprovider -m "not browser"

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(BENCH_STAMP) system-deps
	$(PY) -m bench

bench-smoke: $(BENCH_STAMP)
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .mypy_cache .ruff_cache
