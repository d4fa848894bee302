# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check
TORCH_VERSION ?= 2.13.0
NATTEN_VERSION ?= 0.21.7

.PHONY: install natten-lib run test cuda-check sanitize gpu-check

# torch first, pinned, and only when absent: an unpinned torch would pull the CUDA build.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e ".[dev,tb,cluster]"

# The optional NATTEN peer (backend natten-lib): its pure-Python path with a CPU-only torch; with
# CUDA only its published wheel, never its long source build (natbench/natten_install.py).
natten-lib: install
	@$(PYTHON) -m natbench.natten_install $(NATTEN_VERSION)

# The main job: the kernel-size sweep on the best device here (CUDA when present, else CPU).
# `python -m natbench` needs no activated environment to find the command.
run: natten-lib
	$(PYTHON) -m natbench run --suite kernel-sizes --device auto

# Compile every CUDA kernel for sm_80 and sm_90 with nvcc alone (no GPU needed), and check that
# the torch binding and the CUDA op registration compile against torch's headers. A CPU wheel of
# torch ships c10/cuda/ without its generated cuda_cmake_macros.h: an empty one stands in for it.
CUDA_CHECK_DIR ?= build/cuda-check
# nvcc may be a wrapper script: ask it where its own headers are.
NVCC_INCLUDE = $(shell nvcc --dryrun -x cu -c /dev/null 2>&1 | sed -n 's/^\#\$$ INCLUDES=//p' | tr -d '"')
TORCH_INCLUDE = $(shell $(PYTHON) -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))" 2>/dev/null)
# Without nvcc it says it skipped, so that `make test` passes on a machine with no CUDA toolkit;
# CUDA_CHECK_REQUIRED=1 (as .ci/run sets) makes a missing nvcc an error instead.
cuda-check: install
	@if ! command -v nvcc >/dev/null; then \
		if [ -n "$(CUDA_CHECK_REQUIRED)" ]; then echo "cuda-check: nvcc not found; install the CUDA toolkit to compile-check csrc/cuda"; exit 1; fi; \
		echo "cuda-check: skipped, nvcc is not on the PATH (install the CUDA toolkit to compile-check csrc/cuda)"; \
	else $(MAKE) --no-print-directory $(CUDA_CHECK_DIR)/checked; fi

CUDA_SOURCES = $(wildcard csrc/cuda/* csrc/include/* csrc/bindings.cpp)
$(CUDA_CHECK_DIR)/checked: $(CUDA_SOURCES)
	@mkdir -p $(CUDA_CHECK_DIR)/stub/c10/cuda/impl
	@test -f $(CUDA_CHECK_DIR)/stub/c10/cuda/impl/cuda_cmake_macros.h || echo "#pragma once" > $(CUDA_CHECK_DIR)/stub/c10/cuda/impl/cuda_cmake_macros.h
	nvcc -std=c++17 -O3 -Werror all-warnings -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
		-c csrc/cuda/na_kernels.cu -o $(CUDA_CHECK_DIR)/na_kernels.o
	$(CXX) -std=c++17 -fsyntax-only -Wall -Wno-c++20-extensions -DNATBENCH_WITH_CUDA -I$(CUDA_CHECK_DIR)/stub \
		$(TORCH_INCLUDE) $(NVCC_INCLUDE) csrc/cuda/na_cuda.cpp csrc/bindings.cpp
	@touch $@
	@echo "cuda-check: csrc/cuda compiles for sm_80 and sm_90, and its binding against torch's headers"

# The CPU kernels built with AddressSanitizer and UndefinedBehaviorSanitizer (in their own
# extensions folder), running the natten tests and the malformed-input property test: any report
# aborts the process and fails the target. Python itself is not instrumented, so the ASan runtime
# is preloaded, with libstdc++ after it so that it can intercept C++ exceptions (torch's errors);
# Python's own allocations are not leaks of ours, so leak detection is off. pytest captures at the
# sys level only: a sanitizer's report, written to the file descriptor, stays on the terminal.
SANITIZE_DIR ?= build/sanitize
SANITIZE_TESTS ?= tests/backends/test_natten.py tests/backends/test_op_boundary.py
sanitize: install
	NATBENCH_SANITIZE=address,undefined TORCH_EXTENSIONS_DIR=$(CURDIR)/$(SANITIZE_DIR) NATBENCH_ISOLATION=none \
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	$(PYTHON) -m pytest -q -p no:faulthandler --capture=sys $(SANITIZE_TESTS)

# The one-shot check on a lent GPU (docs/cuda.md): 8 minutes, enforced, everything under
# results/gpu/<gpu-name>/. It installs nothing where natbench's dependencies are already there (a
# GPU machine may have no network), and exits 2 at once on a machine without CUDA.
gpu-check:
	@$(PYTHON) -c "import typer, rich, pandas, scipy, torch" 2>/dev/null || $(MAKE) --no-print-directory install
	@if $(PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		$(PYTHON) -m natbench.natten_install $(NATTEN_VERSION); fi
	$(PYTHON) -m natbench gpu-check

# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
test: natten-lib cuda-check
	$(PYTHON) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status
