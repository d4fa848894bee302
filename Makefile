# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check
TORCH_VERSION ?= 2.13.0
NATTEN_VERSION ?= 0.21.7

.PHONY: install natten-lib run test

# torch first, pinned, and only when absent: an unpinned torch would pull the CUDA build.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev]"

# The optional NATTEN peer (backend natten-lib): its pure-Python path on a CPU-only machine.
natten-lib: install
	@$(PYTHON) -c "import natten" 2>/dev/null || $(PIP) install -q --no-build-isolation \
		natten==$(NATTEN_VERSION) || echo "natten-lib stays unavailable: NATTEN did not install"

# The main job: the kernel-size sweep on the best device here (CUDA when present, else CPU).
run: natten-lib
	natbench run --suite kernel-sizes --device auto

# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: natten-lib
	$(PYTHON) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status
