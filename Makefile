# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
# TORCH picks the torch build; the default is the CPU build. For CUDA, e.g.:
#   make TORCH="torch==2.6.0 --index-url <your CUDA wheel index>" train
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser train test test-full lint format clean

install: $(STAMP) browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Chromium + chromedriver for the report's browser test: a quick check when present, apt-get when root.
browser:
	@sh scripts/install_browser.sh

train: $(STAMP)
	$(PY) -m train +experiment=char_lora $(ARGS)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

test-full: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun wandb
