"""Every benchmark in bench/ runs in its quick mode (the tests' tiny model or a tiny slice of its data, one step,
seconds) and prints its figures, so a benchmark cannot rot unseen. The figures of a quick run mean nothing; the
lines that carry them are checked."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO = r"\d+\.\d+"

# script (and its arguments) -> (lines its quick run must print, as regular expressions; the last one must match
# its last line).
QUICK = {
    "eval_budget.py": [r"synth_mc-smollm2: .*", r"error ratio budgeted / naive .*",
                       *[rf"\s+{budget}%: mae {RATIO}, w1 {RATIO}, worst {RATIO}, std {RATIO}"
                         for budget in (2, 5, 10, 20)]],
    "eval_speed.py": [r"identical prompts: 4/4",
                      rf"lm-eval at batch size +1, one run per template: +{RATIO} s, {RATIO}x paft-rl's time; .*",
                      rf"lm-eval at batch size +4, one run per template: +{RATIO} s, {RATIO}x paft-rl's time; .*",
                      rf"speed-up against lm-eval at its best batch size \([14]\): {RATIO}x \(target >= 5x\)"],
    "eval_speed.py --scoring loglik": [
        r"synth_mc: 1 templates x 4 questions, .*, options scored by log-likelihood, .*",
        r"identical prompts: 4/4",
        rf"lm-eval at batch size +1, one run per template: +{RATIO} s, {RATIO}x paft-rl's time; largest accuracy "
        r"difference 0.0 points .*: ok",
        rf"speed-up against lm-eval at its best batch size \([14]\): {RATIO}x"],
    "greedy_speed.py": [r"synth_mc: 2 templates x 4 questions = 8 prompts .*",
                        r"generate, <=2048 tokens a batch: median .*; tokens equal to the wave decoder's on 8/8 "
                        r"prompts",
                        r"generate, 64 rows a batch: median .*; tokens equal to the wave decoder's on 8/8 prompts",
                        rf"greedy_speed_ratio {RATIO} \(generate, .* / wave; greedy.py stays at >= 1.3\)"],
    "make_grids.py": [r"synth_mc-quick: 8 cells in \d+ s"],
    "overhead.py": [rf"grpo: median cpu s/step PAFT {RATIO} .*", rf"sft: median cpu s/step PAFT {RATIO} .*",
                    rf"grpo_step_time_ratio {RATIO}", rf"sft_step_time_ratio {RATIO}"],
    "rewards.py": [r"== GSM8K-shaped: 16 completions \(4 golds\) ==", r"== MATH-shaped: 16 completions .*",
                   rf"GSM8K-shaped throughput ratio: {RATIO}x \(target >= 5x\)",
                   rf"MATH-shaped  throughput ratio: {RATIO}x \(target >= 2x\)"],
    "select_speed.py": [r"synth_mc: 2 templates x 8 rows, batch 4, .*",
                        r"loss agreement: max \|difference\| = \S+ over 2 templates \(within 1e-4\)",
                        rf"speed ratio \(Trainer.evaluate per template / score_templates\): {RATIO}x"],
    "sft_packing.py": [rf"packed \(bfd\) +step {RATIO} s .*", rf"padded +step {RATIO} s .*",
                       rf"sft_packing_tokens_per_s_ratio {RATIO}"],
    # Colocated vLLM: runs in the vLLM environment (`make test-vllm`), skips where vllm does not import.
    "grpo_vllm.py": [rf"hf: median step {RATIO} s .*", rf"vllm: median step {RATIO} s .*",
                     rf"grpo_vllm_step_time_ratio {RATIO}"],
}
# Quick modes whose runs are checked by tests of their own, with more assertions.
ELSEWHERE = {
    "grpo_mixed.py": ("test_trainers_mixed.py", "test_bench_quick_times_mixed_against_same_groups"),
    "grpo_robustness.py": ("test_bench_grpo_robustness.py",
                           "test_quick_experiment_trains_each_condition_and_judges_it_on_the_heldout_templates"),
    "gpu_check.py": ("test_trainers_mixed.py", "test_gpu_check_smoke_run_on_cpu"),
    "gpu_check.sh": ("test_trainers_mixed.py", "test_gpu_check_smoke_run_on_cpu"),
}
# What a script's quick run needs beyond the test environment.
NEEDS = {"eval_speed.py": "lm_eval", "grpo_vllm.py": "vllm"}
SHARED = {"rewards.py": ("gsm8k/test.jsonl", "math/test.jsonl")}


def scripts() -> list[str]:
    """The runnable benchmarks: every shell script and every Python file with a main block."""
    return sorted(path.name for path in (ROOT / "bench").iterdir() if path.suffix == ".sh" or (
        path.suffix == ".py" and 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")))


def test_every_benchmark_has_a_quick_run_under_test():
    assert sorted({*(run.split()[0] for run in QUICK), *ELSEWHERE}) == scripts()
    for test_file, test_name in ELSEWHERE.values():
        assert f"def {test_name}(" in (ROOT / "tests" / test_file).read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_quick_run_prints_its_figures(script, shared_file):
    name, *arguments = script.split()
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{script} --quick needs {NEEDS[name]}")
    for relative in SHARED.get(script, ()):
        shared_file(relative)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / name), *arguments, "--quick"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for pattern in QUICK[script]:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines[-12:])
    assert re.fullmatch(QUICK[script][-1], lines[-1]), lines[-3:]
