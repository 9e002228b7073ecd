# Two commands a user needs: `make demo` and `make test`. Both create .venv when missing and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, from the local CPU wheel when there is one (pip's find-links), so no dependency pulls another torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q "torch>=2.4"
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/atelier demo

test: install-dev
	$(BIN)/python -m pytest

# `make bench` = the tiny suite on CPU; `make bench SIZE=sd15` = SD 1.5's architecture at 512 px on a CUDA GPU.
SIZE ?= tiny
bench: install-dev
	$(BIN)/python -m bench --size $(SIZE)

clean:
	rm -rf $(VENV) runs .pytest_cache
