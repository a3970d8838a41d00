# make demo / make test set up .venv and everything they need on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
EXTRAS ?= dev,openvino,tensorrt,litert,ssh
SSHD := /usr/sbin/sshd

.PHONY: venv sshd test test-fast demo clean

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

test: venv sshd
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv sshd
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: venv
	$(BIN)/python -m edgedet.demo

clean:
	rm -rf $(VENV) runs .pytest_cache
