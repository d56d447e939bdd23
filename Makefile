# The user's verbs. `make demo` and `make test` install what they need by themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# No GPU: the CPU build of torch (an unpinned torch pulls gigabytes of CUDA packages); with one, the default build
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

TASK ?= slurp
MODEL ?=
TINY ?=
RECIPE ?= recipes/$(if $(TINY),tiny/,)$(TASK).yaml
ARGS ?=
GRID ?=
PYTEST_ARGS ?=

.PHONY: install system-deps tiny-models demo test test-slow sft eval inspect push bench mmlu-redux style clean \
	gpu-wheels gpu-check grid \
	check-recipe check-model check-push check-models check-grid

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -r requirements-dev.txt -e .
	touch $@

# espeak-ng synthesises the speech of the tiny recipes' data; installed where we may (root), else a hint
system-deps:
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null); } \
	  || echo "espeak-ng is missing: install it (apt-get install espeak-ng) for the tiny recipes' speech"

tiny-models: install
	$(PY) scripts/make_tiny_models.py

# The tiny SLURP recipe trained and evaluated on CPU (about 1.5 minutes on 2 cores after the install), then what it
# trained on and its result against what to expect; it fails when the result is not that
DEMO_EVAL := outputs/tiny/slurp/eval/outputs--tiny--slurp/test
demo: install system-deps tiny-models
	$(PY) scripts/sft.py recipes/tiny/slurp.yaml $(ARGS)
	$(PY) scripts/evaluate.py recipes/tiny/slurp.yaml --model_name_or_path outputs/tiny/slurp --split test --overwrite true
	@$(PY) scripts/demo_report.py recipes/tiny/slurp.yaml $(DEMO_EVAL)

test: install system-deps tiny-models
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install system-deps tiny-models
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# Arguments are checked before anything is installed (the checks come first among the prerequisites)
check-recipe:
	@test -f "$(RECIPE)" || { echo "make: no recipe $(RECIPE); TASK is one of: $(notdir $(basename $(wildcard recipes/*.yaml)))"; exit 2; }
check-model:
	@test -n "$(MODEL)" || { echo "usage: make $(MAKECMDGOALS) MODEL=path-or-hub-id [TASK=slurp] [TINY=1]"; exit 2; }
check-push:
	@test -n "$(MODEL)" -a -n "$(HUB_ID)" || { echo "usage: make push MODEL=outputs/qwen2-audio-slurp HUB_ID=user/name"; exit 2; }
	@test -d "$(MODEL)" || { echo "make: no model folder $(MODEL)"; exit 2; }
check-grid:
	@test -f "$(GRID)" || { echo "usage: make grid GRID=recipes/tiny/grids/slurp_text_only.yaml [ARGS=\"--output_dir D\"]"; exit 2; }
check-models:
	@test -n "$(MODELS)" || { echo 'usage: make mmlu-redux MODELS="base-model trained-model ..."'; exit 2; }

# make sft RECIPE=recipes/slurp.yaml [ARGS="--learning_rate 1e-5"]
sft: check-recipe install
	$(PY) scripts/sft.py $(RECIPE) $(ARGS)

# make eval TASK=slurp MODEL=outputs/qwen2-audio-slurp [TINY=1] [ARGS="--split eval"]
eval: check-model check-recipe install
	$(PY) scripts/evaluate.py $(RECIPE) --model_name_or_path $(MODEL) $(ARGS)

# make push MODEL=outputs/qwen2-audio-slurp HUB_ID=user/qwen2-audio-slurp (after make eval: the card has its metrics)
push: check-push install
	$(PY) scripts/push_to_hub.py $(MODEL) --hub_model_id $(HUB_ID)

# make mmlu-redux MODELS="Qwen/Qwen3-0.6B outputs/qwen3-speech-tokens" [ARGS="--dtype bfloat16"]: text ability before/after
mmlu-redux: check-models install
	$(PY) scripts/eval_mmlu_redux.py $(foreach model,$(MODELS),--model $(model)) $(ARGS)

# make grid GRID=recipes/tiny/grids/slurp_text_only.yaml: every cell trained and evaluated, a table and a plot
grid: check-grid install
	$(PY) scripts/grid.py $(GRID) $(ARGS)

inspect: check-recipe install
	$(PY) scripts/inspect_data.py $(RECIPE) --num_samples 3 $(ARGS)

# Speed and memory against baselines measured in the same run: benchmarks/results.json, docs/benchmarks.md
bench: install system-deps tiny-models
	$(PY) benchmarks/run_all.py

# The GPU check on a node with one CUDA GPU, its own PyTorch and no network. On a networked machine first:
#   make gpu-wheels PYTHON_VERSION=3.12 [WITH_BNB=1] [FLASH_ATTN_WHEEL=path.whl]   (into $(WHEELS), under 60 MB)
# then copy the project with $(WHEELS) to the node and run `make gpu-check` there (about 8 minutes on an H100): the
# wheels go to $(GPU_SITE), ahead of the node's packages, never over them. GPU_CHECK_ARGS="--device cpu" smoke-tests.
WHEELS ?= gpu-wheels
PYTHON_VERSION ?= 3.12
GPU_SITE ?= .gpu-site
GPU_CHECK_ARGS ?=
gpu-wheels:
	$(PYTHON) scripts/gpu_wheels.py --dest $(WHEELS) --python-version $(PYTHON_VERSION) \
	  $(if $(WITH_BNB),--with-bitsandbytes,) $(if $(FLASH_ATTN_WHEEL),--flash-attn-wheel $(FLASH_ATTN_WHEEL),)

gpu-check:
	@$(PYTHON) -c "import torch" || { echo "make gpu-check: $(PYTHON) has no torch (PYTHON=path/to/python)"; exit 2; }
	@if ls $(WHEELS)/*.whl >/dev/null 2>&1; then \
	  $(PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target $(GPU_SITE) $(WHEELS)/*.whl; \
	else echo "make gpu-check: no wheels in $(WHEELS): using the packages installed here"; fi
	PYTHONPATH=$(GPU_SITE):src $(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

style: install
	$(VENV)/bin/ruff check src scripts tests benchmarks

clean:
	rm -rf outputs data/tiny
