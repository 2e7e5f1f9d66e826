# embviz: `make demo` builds the MNIST demo and serves it; `make test` runs every test.
# Both create and reuse .venv; nothing is fetched at run time except packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5006
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test bench lint format browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml: that pair installs
	# quickly from the package index here; other pairs download gigabytes or fail to import.
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's chromium for the browser tests; Playwright never downloads a browser here.
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/embviz demo --serve --port $(PORT)

test: $(STAMP) browser
	EMBVIZ_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf data/demo data/demo-images artifacts .pytest_cache
