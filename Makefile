# Two commands set up everything: `make demo` and `make test`. Both create or reuse .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.imgclass-installed

.PHONY: demo test docs install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,onnx]'
	touch $(STAMP)

install: $(STAMP)

# prepare -> train -> evaluate -> predict on scikit-learn's bundled digits, offline, about a minute on 2 cores.
demo: $(STAMP)
	$(BIN)/imgclass prepare --example digits demo/digits --force
	$(BIN)/imgclass train demo/digits --image-size 32 --epochs 10 --augment none --out demo/run --force
	$(BIN)/imgclass evaluate demo/run demo/digits/test
	$(BIN)/imgclass predict demo/run demo/digits/test/3 --top-k 3 --format csv | head -n 6

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# docs/cli.md, the command reference, from the Typer app (tests/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(BIN)/python tools/gen_cli_docs.py

clean:
	rm -rf demo runs
