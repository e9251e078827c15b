# edgeresnext — every target sets up what it needs (a .venv with CPU torch 2.13.0) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
TARGET ?= cpu
# Torch first, pinned: a bare `torch` requirement would pull a CUDA build with GBs of extra packages.
# On a machine without a local CPU wheel, set TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_SPEC  ?= torch==2.13.0
EXTRA_BUILD_ARGS = $(if $(MODEL),--model $(MODEL)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
                   $(if $(DATA),--data $(DATA)) $(if $(CALIB),--calib $(CALIB)) $(if $(LABELS),--labels $(LABELS))
PYTEST_ARGS ?=

.PHONY: setup tritonserver dataset data train build build-all test test-slow test-gpu bench docs lint format schema clean help

help:
	@echo "make setup | dataset | data | train | build TARGET=<name> | build-all | test | test-slow | test-gpu | bench | docs | lint | schema | clean"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev,docs,sign,serve]"
	@touch $@

setup: $(VENV)/.installed

# A real Triton server for tests/test_triton.py: tritonserver and its Python backend from the nvidia-pytriton wheel,
# unpacked with --no-deps into $(VENV)/tritonserver, apart from the venv's packages (the wheel's metadata asks
# numpy<2, which would downgrade numpy under torch, onnx and openvino). The backend needs the stub of the Python that
# runs the models. Only where the wheel runs (Linux x86_64, glibc >= 2.35); elsewhere the tests skip and say why.
TRITON_WHEEL ?= nvidia-pytriton==0.7.0
TRITON_DIR    = $(VENV)/tritonserver
$(TRITON_DIR)/.installed: $(VENV)/.installed
	@if [ "$$(uname -sm)" = "Linux x86_64" ] && $(PY) -c "import platform, sys; v = platform.libc_ver(); \
	    sys.exit(v[0] != 'glibc' or tuple(map(int, v[1].split('.')[:2])) < (2, 35))"; then \
	  rm -rf $(TRITON_DIR) && $(PIP) install --quiet --no-deps --target $(TRITON_DIR) "$(TRITON_WHEEL)" && \
	  server=$(TRITON_DIR)/pytriton/tritonserver && pyver=$$($(PY) -c "import sys; print('%d.%d' % sys.version_info[:2])") && \
	  cp $$server/python_backend_stubs/$$pyver/triton_python_backend_stub $$server/backends/python/ && touch $@; \
	else echo "tritonserver: the nvidia-pytriton wheel needs Linux x86_64 with glibc 2.35+; its tests will skip"; fi

tritonserver: $(TRITON_DIR)/.installed

# Fashion-MNIST on this machine: found, else apt-get (root or password-less sudo), else downloaded, else one line
# saying what to run. A no-op once it is there.
dataset: setup
	@$(PY) -m edgeresnext.cli --quiet data --fetch-only

# calib_data/.complete is written by the command itself, last.
calib_data/.complete: $(VENV)/.installed
	$(PY) -m edgeresnext.cli data --out calib_data --count 500

data: calib_data/.complete

train: dataset
	$(PY) -m edgeresnext.cli train --model resnext20_4x8d --dataset fashion-mnist --epochs 24 --batch-size 128 \
	    --lr 0.1 --seed 0 --out runs/fashion-mnist

# The build sets up the inputs the target reads, and only those (Fashion-MNIST, a generated calib_data/).
build: setup
	$(PY) -m edgeresnext.cli build --target $(TARGET) $(EXTRA_BUILD_ARGS)

build-all: setup
	$(PY) -m edgeresnext.cli build-all

test: dataset tritonserver
	$(PY) -m pytest -m "not slow and not gpu and not tensorrt" $(PYTEST_ARGS)

test-slow: dataset
	$(PY) -m pytest -m "slow and not gpu and not tensorrt" $(PYTEST_ARGS)

# TensorRT + cuda-python from PyPI unless the host already has them (JetPack ships TensorRT with the OS).
test-gpu: dataset
	$(PY) -c "import tensorrt, cuda" 2>/dev/null || $(PIP) install --quiet -e ".[tensorrt]"
	$(PY) -m pytest -m "gpu or tensorrt" $(PYTEST_ARGS)

bench: dataset
	$(PY) -m bench.run --out bench/results.json
	$(PY) -m bench.onnxruntime_int8 --out bench/onnxruntime_int8.json
	$(PY) -m bench.near_copies --out bench/near_copies.json
	$(PY) -m bench.near_copies_photos --out bench/near_copies_photos.json
	$(PY) -m bench.build_time --target jetson --out bench/build_time.json

# The manual into site/, warnings as errors (tests/test_docs.py builds it the same way in `make test`).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: setup
	$(VENV)/bin/ruff check edgeresnext tests docs/hooks
	$(VENV)/bin/ruff format --check edgeresnext tests docs/hooks

format: setup
	$(VENV)/bin/ruff format edgeresnext tests docs/hooks
	$(VENV)/bin/ruff check --fix edgeresnext tests docs/hooks

# edgeresnext/schemas/manifest.schema.json, generated from the manifest's type (edgeresnext.bundle.model).
schema: setup
	$(PY) -c "from edgeresnext.bundle.model import write_schema_file; print(write_schema_file())"

# calib_data/ may hold your own images: only those `edgeresnext data` wrote (listed in its record) are removed.
clean:
	rm -rf build runs site .pytest_cache .ruff_cache
	test ! -x $(PY) || $(PY) -m edgeresnext.cli -q data --out calib_data --remove
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
