# make demo / make test set up .venv and everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
EXTRAS ?= dev,openvino,tensorrt,litert,ssh,postgres
SSHD := /usr/sbin/sshd

.PHONY: venv sshd postgres cxx-toolchain test test-fast demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

# tests/devices runs a real OpenSSH server on 127.0.0.1: install Debian's openssh-server when it is missing and
# apt-get can run (as root, or through password-less sudo); otherwise those tests skip and say why.
sshd:
	@if [ ! -x $(SSHD) ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    SUDO="sudo -n"; else echo "note: $(SSHD) missing and no root/sudo: the SSH device tests will skip"; exit 0; fi; \
	  echo "installing openssh-server for the SSH device tests"; \
	  ($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends openssh-server >/dev/null) || echo "note: openssh-server could not be installed"; \
	fi

# the store tests (tests/search) start a throwaway PostgreSQL cluster on 127.0.0.1: install Debian's postgresql
# server when initdb is missing and apt-get can run (as root, or through password-less sudo); otherwise they skip
postgres:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && command -v apt-get >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    SUDO="sudo -n"; else echo "note: PostgreSQL missing and no root/sudo: the PostgreSQL store tests will skip"; \
	    exit 0; fi; \
	  echo "installing postgresql for the store tests"; \
	  ($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends postgresql >/dev/null) || echo "note: postgresql could not be installed"; \
	fi

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

test: venv sshd postgres cxx-toolchain
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv sshd postgres cxx-toolchain
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(BIN)/edgedet search --target local_cpu -o runs/search/demo --resume
	@echo "edgedet is installed in $(VENV): 'source $(VENV)/bin/activate' puts the edgedet command on your PATH"

clean:
	rm -rf $(VENV) runs .pytest_cache
