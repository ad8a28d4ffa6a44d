"""bench/grpo_robustness.py --quick: the experiment's plumbing on a tiny model, so the script cannot rot unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prompt_pool import load_pool

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "bench" / "grpo_robustness.py"), "--quick", "--seeds", "0",
               "--conditions", "fixed", "mixed_format", "--out", str(out)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_experiment_trains_each_condition_and_judges_it_on_the_heldout_templates(tmp_path):
    first = run(tmp_path / "exp")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert set(summary["runs"]) == {"base", "fixed_seed0", "mixed_format_seed0"}
    assert summary["conditions"]["mixed_format"]["seeds"] == 1
    heldout = {t.id for t in load_pool("synth_arith").heldout}
    for name in summary["runs"]:
        results = json.loads((tmp_path / "exp" / "eval" / name / "results.json").read_text())
        (metrics,) = results["models"].values()
        assert set(metrics["per_template"]) == heldout  # every model on the same unseen templates
    recipe = (tmp_path / "exp" / "recipes" / "mixed_format_seed0.yaml").read_text()
    assert "group_templates: mixed" in recipe and "template_format" in recipe
    # The format condition trained with the format reward: TRL logged it.
    states = sorted((tmp_path / "exp" / "mixed_format_seed0").glob("**/trainer_state.json"))
    logged = [entry for state in states for entry in json.loads(state.read_text())["log_history"]]
    assert any("rewards/template_format/mean" in entry for entry in logged)

    again = run(tmp_path / "exp")  # a rerun resumes: every finished stage is skipped
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done") == 5, again.stdout[-2000:]
