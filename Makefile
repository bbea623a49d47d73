# lookalike: `make demo` builds the demo gallery and queries the demo photo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/demo/out
PYTEST_ARGS ?=

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/lookalike build --images data/demo/images --catalog data/demo/catalog.json --data-dir $(DEMO_DATA)
	$(BIN)/lookalike query data/demo/selfie.jpg --data-dir $(DEMO_DATA) --top-k 3

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DATA) .pytest_cache
