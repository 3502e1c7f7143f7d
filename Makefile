# The two commands of the quick start are `make serve` and `make test`; both install first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url <PyTorch CPU wheel index>" where torch's CPU wheel is not local.
PIP_ARGS ?=
ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.memsidecar-installed

.PHONY: install serve test clean

install: $(STAMP)

# Idempotent: re-runs only when the venv is missing or pyproject.toml/Makefile changed (the install is editable).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@extra=cpu; if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=gpu; fi; \
	  echo "memsidecar: installing the '$$extra' extra into $(VENV) (this takes a few minutes the first time)"; \
	  $(PY) -m pip install -q --disable-pip-version-check $(PIP_ARGS) -e ".[$$extra,test]" 2> >(grep -v "is ignored: it is neither" >&2); \
	  if [ "$$extra" = cpu ]; then \
	    $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2> >(grep -v "not installed" >&2); \
	  fi
	$(VENV)/bin/memsidecar doctor
	@touch $@

serve: install
	$(VENV)/bin/memsidecar serve $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
