# Atelier: `make run` serves on 127.0.0.1:8000, `make test` runs lint + the whole test suite.
# Both create .venv and install pinned dependencies on first use.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint browser bench-predict bench-load bench-gatys fetch-models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/atelier serve

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# The studio's browser tests drive Debian's Chromium through Playwright (never
# `playwright install`, which downloads a browser). Installed here when missing and we are root;
# otherwise those tests skip with a message.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fetch-models: $(STAMP)
	$(BIN)/atelier models fetch

bench-gatys: $(STAMP)
	$(BIN)/python bench/gatys.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
