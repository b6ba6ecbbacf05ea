# s2f: the two commands. `make demo` and `make test` set everything up on a fresh machine
# (Python 3.11 or 3.12, nothing installed, no GPU): `make demo` the package with the extras the demo
# runs, `make test` every extra but gpu and the test tools (pyproject.toml). Pins: requirements.lock
# (see BUILD.md). `make test` lints and checks the format (ruff, pinned in the test extra) before it
# runs the tests.

SHELL := /bin/bash
VENV ?= .venv
# First Python 3.12 / 3.11 on PATH (or PYTHON=... from the caller). The case pattern is written
# "(3.11|3.12)" so its parentheses balance inside $(shell ...).
ifndef PYTHON
PYTHON := $(shell for p in python3.12 python3.11 python3; do \
  v=$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) && \
  case $$v in (3.11|3.12) echo $$p; exit 0;; esac; done; echo none)
endif
STAMP := $(VENV)/.installed
# `make demo` installs only the extras the demo runs (no dask, gcs or test tools: TensorFlow is most
# of the install either way); `make test` adds the rest to the same environment
DEMO_STAMP := $(VENV)/.installed-demo
TEST_EXTRAS := all,test
# uv installs the lock's packages into .venv in about a third of pip's time (parallel downloads,
# bytecode compiled in parallel); pip installs uv itself, pinned here. `make ... INSTALLER=pip`
# installs with pip alone: uv reads no pip.conf, so an index or proxy set only there needs pip
INSTALLER ?= uv
UV_VERSION := 0.13.9
# the tests' object store (a GCS emulator and mitmproxy), apart from .venv: tests/tools.lock says why
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
DEMO_OUT ?= demo_out
DEMO_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers: most tests wait on `s2f` subprocesses, so two workers keep 2 cores busy
TEST_WORKERS ?= 2

.PHONY: demo test venv clean

venv: $(STAMP)

# $(call install,STAMP,EXTRAS): .venv with the package and those extras, pinned by the lock
define install
	@if [ "$(PYTHON)" = none ]; then echo "error: need Python 3.11 or 3.12 on PATH (or make PYTHON=/path/to/python3.12)" >&2; exit 1; fi
	@case "$(INSTALLER)" in (uv|pip) ;; (*) echo "error: INSTALLER=$(INSTALLER): use uv or pip" >&2; exit 1;; esac
	@echo "== setting up $(VENV) with $(PYTHON) ($$($(PYTHON) --version)): .[$(2)], installed by $(INSTALLER)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@set -o pipefail; { $(call $(INSTALLER)_install,$(VENV),-c requirements.lock -e ".[$(2)]"); } 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@touch $(1)
endef

# $(call pip_install,VENV,ARGS) / $(call uv_install,VENV,ARGS): install ARGS into that venv
pip_install = $(1)/bin/python -m pip install --quiet --disable-pip-version-check $(2)
uv_install = $(call pip_install,$(1),uv==$(UV_VERSION)) && \
  $(1)/bin/uv pip install --quiet --python $(1)/bin/python --compile-bytecode $(2)

$(STAMP): requirements.lock pyproject.toml setup.py
	$(call install,$(STAMP),$(TEST_EXTRAS))

$(DEMO_STAMP): requirements.lock pyproject.toml setup.py
	$(call install,$(DEMO_STAMP),demo)

$(TOOLS_STAMP): tests/tools.lock
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	@set -o pipefail; { $(call $(INSTALLER)_install,$(TOOLS_VENV),--no-deps -r tests/tools.lock); } 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	@touch $(TOOLS_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/s2f demo --config=demo --demo_dir=$(DEMO_OUT) $(DEMO_ARGS)

test: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal --durations=25 $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) $(TOOLS_VENV) $(DEMO_OUT) build *.egg-info
