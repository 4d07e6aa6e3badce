# One entry point: `make demo` and `make test` each build .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned to the builds this machine carries on disk (pip finds them there).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint-imports install clean bench

$(BIN)/medclf: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/medclf

install: $(BIN)/medclf

demo: install
	$(BIN)/medclf demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

# The layering contracts of pyproject.toml's [tool.importlinter]; fails on an import that points up.
lint-imports: install
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .medclf-cache
