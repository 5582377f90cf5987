# The only entry points a newcomer needs: make demo, make test (and make bench, make lint).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench bench-smoke system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev,bench]'
	rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests drive for real: redis-server 7.x and Chromium.
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server chromium >/dev/null; \
	  else echo "need redis-server and chromium (apt-get install redis-server chromium)" >&2; exit 1; fi; }

demo: $(STAMP)
	$(PY) -m redis_streaming demo

test: $(STAMP) system-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP) system-deps
	$(PY) -m bench

bench-smoke: $(STAMP)
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
