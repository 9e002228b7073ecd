# Two commands a user needs: `make demo` and `make test`. Both create .venv when missing and install the tested lock
# (requirements/lock.txt); `make lock` regenerates it, `make test-latest` tries the newest releases in .venv-latest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
# torch first, from the local CPU wheel when there is one (pip's find-links), so no dependency pulls another torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-latest lint install install-dev lock bench clean app-screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Everything from the lock (runtime and dev tools), then atelier itself without resolving anything again.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q "torch>=2.4"
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install install-dev: $(VENV)/.installed

demo: install
	$(BIN)/atelier demo

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench

# The newest releases the registry offers (torch stays the installed local wheel): a fresh venv each time.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q "$(TORCH_SPEC)" || .venv-latest/bin/python -m pip install -q "torch>=2.4"
	.venv-latest/bin/python -c "import torch; print('torch==' + torch.__version__)" > .venv-latest/torch-pin.txt
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c .venv-latest/torch-pin.txt -e ".[dev,app,parse,mcld]"
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(diffusers|transformers|peft|accelerate)=='
	.venv-latest/bin/python -m pytest -p no:cacheprovider

# Resolve pyproject's ranges (plus the dev, app, parse and mcld extras) under requirements/lock-constraints.txt in a scratch
# venv and freeze the result; torch is left out (it is the local wheel, installed first).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q "$(TORCH_SPEC)"
	.venv-lock/bin/python -m pip install -q -c requirements/lock-constraints.txt ".[dev,app,parse,mcld]"
	{ echo "# The tested dependency set: made by 'make lock' from pyproject.toml + requirements/lock-constraints.txt."; \
	  echo "# torch is installed first from \$$(TORCH_SPEC) and is not listed."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch==|atelier[ =@])' ; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .venv-lock
# `make bench` = the tiny suite on CPU; `make bench SIZE=sd15` = SD 1.5's architecture at 512 px on a CUDA GPU.
SIZE ?= tiny
bench: install-dev
	$(BIN)/python -m bench --size $(SIZE)

# One screenshot per tab of `atelier app` on the demo's models (run `make demo` first), for docs/app.md and the README.
CHECKPOINTS ?= runs/demo
app-screenshots: install
	ATELIER_APP_CHECKPOINTS=$(CHECKPOINTS) ATELIER_APP_SCREENSHOTS=docs/images/app $(BIN)/python -m pytest tests/test_app_browser.py -k every_built_task

clean:
	rm -rf $(VENV) .venv-latest .venv-lock runs .pytest_cache
