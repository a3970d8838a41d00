# make demo / make test set up .venv and everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
EXTRAS ?= dev,openvino,tensorrt,litert

.PHONY: venv cxx-toolchain test test-fast demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

# cmake and a C++17 compiler for the C++ runtime tests (the OpenVINO SDK comes with the openvino wheel)
cxx-toolchain:
	@if ! command -v cmake >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing cmake and g++ (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null; \
	  else \
	    echo "warning: cmake or g++ missing and cannot apt-get install them: the C++ runtime tests will fail"; \
	  fi; \
	fi

test: venv cxx-toolchain
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv cxx-toolchain
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(BIN)/edgedet search --target targets/local_cpu.yaml -o runs/search/demo --resume

clean:
	rm -rf $(VENV) runs .pytest_cache
