# The two commands of the quick start are `make serve` and `make test`; both install first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments, e.g. PIP_ARGS="--extra-index-url <PyTorch CPU wheel index>" where torch's CPU wheel is not local.
PIP_ARGS ?=
ARGS ?=
PYTEST_ARGS ?=
# `make bench`: BENCHES="ttft adapters" runs a subset (default: all), QUICK=1 their short variants, BENCH_ARGS are
# passed to each (e.g. BENCHES=adapters BENCH_ARGS="--adapters 64 --max-loras 4").
BENCHES ?=
QUICK ?=
BENCH_ARGS ?=
STAMP := $(VENV)/.memsidecar-installed

.PHONY: install serve test bench clean

install: $(STAMP)

# Idempotent: re-runs only when the venv is missing or pyproject.toml/Makefile changed (the install is editable).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@extra=cpu; if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=gpu; fi; \
	  echo "memsidecar: installing the '$$extra' extra into $(VENV) (this takes a few minutes the first time)"; \
	  $(PY) -m pip install -q --disable-pip-version-check $(PIP_ARGS) -e ".[$$extra,test,bench]" 2> >(grep -v "is ignored: it is neither" >&2); \
	  if [ "$$extra" = cpu ]; then \
	    $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2> >(grep -v "not installed" >&2); \
	  fi
	$(VENV)/bin/memsidecar doctor
	@touch $@

serve: install
	$(VENV)/bin/memsidecar serve $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Appends each benchmark's JSON line to bench/results/, then rewrites bench/REPORT.md (also after a failure, which
# still fails the target, naming the benchmark).
bench: install
	@status=0; \
	  $(PY) -m bench.run_all $(if $(filter 1 yes true,$(QUICK)),--quick) $(BENCHES) $(if $(BENCH_ARGS),-- $(BENCH_ARGS)) \
	    || status=$$?; \
	  $(PY) -m bench.report && exit $$status

clean:
	rm -rf $(VENV) .pytest_cache
