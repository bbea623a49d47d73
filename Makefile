# lookalike: `make demo` builds the demo gallery and queries the demo photo; `make page` serves the web page on
# it; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/demo/out
PYTEST_ARGS ?=

.PHONY: install demo page test clean bench bench-full dlib-blas-wheel dlib-blas docs messages

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: install
	$(BIN)/lookalike build --images data/demo/images --catalog data/demo/catalog.json --data-dir $(DEMO_DATA)
	$(BIN)/lookalike query data/demo/selfie.jpg --data-dir $(DEMO_DATA) --top-k 3

# crawl -> build -> query: photos of the CATALOG's people from Bing (needs the internet) into DATA/images, a
# gallery in DATA, then PHOTO's lookalikes. Extra options: CRAWL_OPTIONS='--engine baidu --per-person 10'.
CATALOG ?= data/demo/catalog.json
DATA ?= data/pipeline
PHOTO ?= data/demo/selfie.jpg
CRAWL_OPTIONS ?=
BUILD_OPTIONS ?=

.PHONY: pipeline
pipeline: install
	$(BIN)/lookalike crawl --catalog $(CATALOG) --data-dir $(DATA) $(CRAWL_OPTIONS)
	$(BIN)/lookalike build --images $(DATA)/images --catalog $(CATALOG) --data-dir $(DATA) $(BUILD_OPTIONS)
	$(BIN)/lookalike query $(PHOTO) --data-dir $(DATA) --top-k 3

# The browser tests need Debian's chromium and chromium-driver (as root: apt-get install -y chromium
# chromium-driver; .ci/run installs them when missing); without them they are skipped.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The web page on the demo gallery: open http://127.0.0.1:8000/ (Ctrl-C stops).
page: install
	$(BIN)/lookalike build --images data/demo/images --catalog data/demo/catalog.json --data-dir $(DEMO_DATA)
	$(BIN)/lookalike serve --data-dir $(DEMO_DATA) --top-k 3

# The generated text of the docs (tools/write_docs.py; tests/test_docs.py checks it): configs/default.toml and the
# table of docs/settings.md from lookalike_cli/config.py, docs/cli.md from every --help, and the tables of
# docs/operations.md and docs/crawl.md from the tests' cases.
docs: install
	$(BIN)/python tools/write_docs.py

# The messages people see (N_("...") in lookalike_cli/, see babel.cfg) extracted into lookalike_cli/locales/messages.pot,
# and every language's messages.po updated from it (new messages untranslated, changed ones fuzzy: translate them;
# tests/test_language.py fails until every one is). The .po files are read at run time: nothing is compiled.
LOCALES := lookalike_cli/locales
messages: install
	$(BIN)/pybabel extract --mapping-file babel.cfg --keyword N_ --no-location --sort-output --width 120 --project lookalike \
		--output-file $(LOCALES)/messages.pot lookalike_cli
	$(BIN)/pybabel update --input-file $(LOCALES)/messages.pot --output-dir $(LOCALES) --width 120 --ignore-obsolete

# Speed figures, side by side in one run, written to benchmarks/results/ (see benchmarks/RESULTS.md).
bench: $(VENV)/.bench
	$(BIN)/python benchmarks/run_all.py

bench-full: $(VENV)/.bench
	$(BIN)/python benchmarks/run_all.py --full

$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

# Optional: dlib compiled from the PyPI sdist against OpenBLAS (about 5x faster descriptors), cached.
# The wheel is built once for this machine (-march=native) and kept in DLIB_CACHE; `dlib-blas` puts it in
# place of dlib-bin in .venv (`make install` after a change to pyproject.toml brings dlib-bin back).
DLIB_VERSION ?= 20.0.1
DLIB_CACHE ?= $(HOME)/.cache/lookalike/dlib-blas
DLIB_WHEEL = $(DLIB_CACHE)/dlib-$(DLIB_VERSION)-cp$(shell $(BIN)/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null)*.whl

dlib-blas-wheel: install
	dpkg -s libopenblas-dev >/dev/null 2>&1 || (apt-get update && apt-get install -y libopenblas-dev)
	ls $(DLIB_WHEEL) >/dev/null 2>&1 || DLIB_USE_BLAS=ON DLIB_USE_LAPACK=ON CXXFLAGS='-O3 -march=native' \
		CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 19 $(BIN)/python -m pip wheel --no-deps --no-binary dlib \
		dlib==$(DLIB_VERSION) -w $(DLIB_CACHE)

dlib-blas: dlib-blas-wheel
	$(BIN)/python -m pip uninstall --quiet -y dlib-bin dlib
	$(BIN)/python -m pip install --quiet --no-deps $(DLIB_WHEEL)
	$(BIN)/lookalike info

clean:
	rm -rf $(VENV) $(DEMO_DATA) .pytest_cache
