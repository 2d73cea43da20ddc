# nmcm — developer entry points. `make demo` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
NMCM := $(VENV)/bin/nmcm
STAMP := $(VENV)/.installed
HOST_BUILD := build/host
JOBS ?= 2

.PHONY: help setup system-packages demo test test-python test-firmware lint format bench \
	firmware-arm calibrate study clean

help:
	@echo "make demo    set up, then train the quick-start cluster and print its summary"
	@echo "make test    set up, then run lint, the firmware tests and the Python tests"
	@echo "make setup   system packages (apt-get, only if missing) and the .venv"
	@echo "make lint    ruff, mypy, the workflows against their schema, clang-format"
	@echo "make format  apply ruff format and clang-format"
	@echo "make bench   run the benchmarks under bench/"
	@echo "make firmware-arm  cross-build the ARM ports for the four targets"
	@echo "make calibrate  re-fit the shipped cost model weights under QEMU (after a kernel change)"
	@echo "make study  regenerate docs/study.md: the permutation study of the three example models"

system-packages:
	@.ci/system-packages.sh

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

setup: system-packages $(STAMP)

# The quick start: an STM32F413ZH node and an STM32H7A3ZI-Q node, simulated, training the digits
# CNN; the nodes keep running afterwards (`.venv/bin/nmcm down manifests/quickstart.yaml`).
demo: setup
	$(NMCM) validate manifests/quickstart.yaml
	$(NMCM) apply manifests/quickstart.yaml
	$(NMCM) status manifests/quickstart.yaml

CXX_SOURCES = $(shell find firmware -name '*.cpp' -o -name '*.h' -o -name '*.hpp' 2>/dev/null)

lint: setup
	$(VENV)/bin/ruff check nmcm_deploy tests bench
	$(VENV)/bin/ruff format --check nmcm_deploy tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@if [ -n "$(CXX_SOURCES)" ]; then clang-format --dry-run -Werror $(CXX_SOURCES); fi

format: setup
	$(VENV)/bin/ruff format nmcm_deploy tests bench
	$(VENV)/bin/ruff check --fix nmcm_deploy tests bench
	@if [ -n "$(CXX_SOURCES)" ]; then clang-format -i $(CXX_SOURCES); fi

test-firmware: setup
	cmake -S firmware -B $(HOST_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNMCM_SANITIZE=ON >/dev/null
	cmake --build $(HOST_BUILD) -j$(JOBS)
	ctest --test-dir $(HOST_BUILD) --output-on-failure -j$(JOBS)

# pytest exits 5 when it collected nothing: that is a broken test run, not a pass.
test-python: setup
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint test-firmware test-python

bench: setup
	$(PY) bench/cost_model.py
	$(PY) bench/engine.py
	$(PY) bench/schedules.py
	$(PY) bench/validate_scale.py

# The cost model's shipped weights, measured on the kernels as they are (docs/cost-model.md).
calibrate: setup
	$(NMCM) calibrate --target qemu --out nmcm_deploy/profiles/costs

# The permutation study of the digits MLP, the digits CNN and the wide CNN that fits no single F413
# (docs/study.md, with each study's data and plots in docs/study/<example>/).
STUDY_EXAMPLES = digits-mlp-f413-h7a3 digits-cnn-f413-h7a3 digits-widecnn-f413-f413
study: setup
	@for m in $(STUDY_EXAMPLES); do \
	  $(NMCM) study manifests/examples/$$m.yaml --max-nodes 3 --out docs/study/$$m -o json \
	    > /dev/null || exit 1; \
	done
	$(PY) -m nmcm_deploy.costs.study_doc $(STUDY_EXAMPLES) > docs/study.md

# Cross builds of the ARM ports (smoke firmware, core, net, W5500 driver) for the four targets.
firmware-arm: setup
	@for mcu in stm32f413zh stm32h7a3zi mps2-an386 mps2-an500; do \
	  cmake -S firmware/arm -B build/arm-$$mcu -DNMCM_MCU=$$mcu >/dev/null && \
	  cmake --build build/arm-$$mcu -j$(JOBS) || exit 1; \
	done

clean:
	rm -rf build .nmcm .pytest_cache .mypy_cache .ruff_cache
