# Two commands for people: `make demo` and `make test` (see README.md). Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RESULTS ?= results
PORT ?= 8050
export NUMBA_CACHE_DIR ?= $(HOME)/.cache/attnbrain/numba

.PHONY: demo test install install-test precompute-demo browser-deps slurm-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml: pip takes them from this machine's disk.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

precompute-demo: install
	$(PY) precompute.py --preset demo --out $(RESULTS)

demo: precompute-demo
	$(PY) -m dashboard --results $(RESULTS) --port $(PORT)

# Browser tests drive Debian's Chromium headless. Without root or apt they skip with a reason, except under CI=true.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	then echo "installed chromium"; \
	elif [ "$$CI" = "true" ]; then echo "error: could not install chromium (needed for the browser tests under CI)"; exit 1; \
	else echo "warning: chromium could not be installed; browser tests will be skipped"; fi

# The study tests start a single-node SLURM from Debian's packages (tests/slurm_node.py); without root or apt
# they are skipped with a reason, except under CI=true.
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then exit 0; fi; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq slurm-wlm munge >/dev/null; \
	then echo "installed slurm-wlm and munge"; \
	elif [ "$$CI" = "true" ]; then echo "error: could not install slurm-wlm and munge (needed for the SLURM test under CI)"; exit 1; \
	else echo "warning: slurm-wlm could not be installed; the SLURM test will be skipped"; fi

test: install-test browser-deps slurm-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(RESULTS) .pytest_cache
