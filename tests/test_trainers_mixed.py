"""Mixed-template GRPO groups (``group_templates: mixed``): the G completions of a question are spread over m distinct
train templates of it, in blocks of G/m, each completion's template a pure function of (seed, row id, cycle step,
place in the group): at the generation call, on 2 processes, after a resume inside a cycle. And the answer format
of each completion's own template reaches the ``template_format`` reward. The same file is the worker torchrun
starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import StopAfter, chooser, torchrun, write_pool
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.configs import PaftGRPOConfig
from paft_rl.formatting import PromptFormat
from paft_rl.tasks import load_rows
from paft_rl.trainers import build_chooser, build_dataset
from paft_rl.trainers.data import example_fields
from paft_rl.trainers.preflight import resolve_task
from prompt_pool import UserError

G = 4
FORMATS = {"a1": "answer_is", "a2": "hashes", "a3": "boxed", "a4": None, "a5": "last_line", "a6": "regex:\\d"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def format_pool(tmp_path_factory):
    """helpers' six arithmetic templates, each declaring an answer format (a4 none)."""
    path = write_pool(tmp_path_factory.mktemp("pool") / "arith.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if FORMATS.get(record["id"]):
            record["answer_format"] = FORMATS[record["id"]]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def group_args(output_dir, **overrides) -> PaftGRPOConfig:
    options = dict(output_dir=str(output_dir), task="synth_arith", group_templates="mixed", num_generations=G,
                   per_device_train_batch_size=8, max_completion_length=4, learning_rate=0.05, max_steps=2,
                   report_to="none", use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", seed=5)
    return PaftGRPOConfig(**{**options, **overrides})


def recording_trainer_class():
    """A PaftGRPOTrainer that records, at TRL's generation call, (step, row id, template id, decoded prompt) of
    every completion."""
    from paft_rl.trainers.grpo import PaftGRPOTrainer

    class Recording(PaftGRPOTrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            seen = [self.processing_class.decode(ids) for ids in prompt_ids]
            self.generated.extend([self.state.global_step, row, template, text]
                                  for row, template, text in zip(self._rows, self._paft_group_template_ids, seen,
                                                                 strict=True))
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)

        def _generate_and_score_completions(self, inputs):
            self._rows = [row["row_id"] for row in inputs]
            return super()._generate_and_score_completions(inputs)

    return Recording


def train(model_dir, args, rows=8, rewards=None, resume=None, **kwargs):
    from helpers import digit_share

    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=rows, seed=0))
    trainer = recording_trainer_class()(str(model_dir), rewards or [digit_share], args, dataset,
                                        processing_class=make_tiny_tokenizer(), **kwargs)
    trainer.generated = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer, dataset


def expected_prompt(the_chooser, dataset, row_id, template_id) -> str:
    row = next(r for r in dataset if r["row_id"] == row_id)
    text = the_chooser.render(the_chooser.pool.get(template_id), example_fields(row))
    return make_tiny_tokenizer().apply_chat_template(PromptFormat(chat=True).build(text), add_generation_prompt=True,
                                                     tokenize=False)


def assert_mixed_groups(generated: list, the_chooser, dataset, templates: int, steps=(0, 1)) -> None:
    """In generation order, every G completions are one row's group: its m templates (the chooser's, for that row
    and step) in blocks of G/m, each completion prompted with its own template's text."""
    assert len(generated) % G == 0
    groups = [generated[start:start + G] for start in range(0, len(generated), G)]
    assert {group[0][0] for group in groups} == set(steps)
    for group in groups:
        step, row_id = group[0][:2]
        assert all(member[:2] == [step, row_id] for member in group), group
        drawn = [t.id for t in the_chooser.group_templates(row_id, step)]
        assert len(set(drawn)) == templates
        assert [member[2] for member in group] == [t for t in drawn for _ in range(G // templates)]
        for _, _, template_id, seen in group:
            assert seen == expected_prompt(the_chooser, dataset, row_id, template_id)


@pytest.mark.parametrize("templates", [2, None], ids=["m2", "m-default-G"])
def test_each_completion_is_generated_from_its_assigned_template(templates, model_dir, format_pool, tmp_path):
    import rewards

    seen_formats = []

    def format_probe(prompts, completions, answer_format=None, **kwargs):
        seen_formats.extend(answer_format)
        return [float(len(c[-1]["content"])) for c in completions]

    args = group_args(tmp_path / "o", pool=str(format_pool), templates_per_group=templates)
    trainer, dataset = train(model_dir, args, rewards=[format_probe, rewards.template_format])
    m = templates or G
    the_chooser = build_chooser(args, resolve_task(args)).grouped(m)
    assert_mixed_groups(trainer.generated, the_chooser, dataset, m)
    template_ids = [template for _, _, template, _ in trainer.generated]
    # the completions table names each completion's own template
    table = list(trainer._logs["extra"]["template_id"])
    assert table and table == template_ids[-len(table):]
    # each reward call sees, per completion, the answer format its own template declares (a4: none)
    assert seen_formats == [FORMATS[template] for template in template_ids]
    assert any(entry.get("rewards/template_format/mean") is not None for entry in trainer.state.log_history)
    assert any(key.startswith("paft/reward_by_template/") for entry in trainer.state.log_history for key in entry)


def test_same_groups_are_unchanged(model_dir, format_pool, tmp_path):
    """group_templates: same (the default) keeps one template per group, the one a mixed group draws first."""
    args = group_args(tmp_path / "o", pool=str(format_pool), group_templates="same")
    trainer, dataset = train(model_dir, args)
    the_chooser = build_chooser(args, resolve_task(args))
    mixed = the_chooser.grouped(2)
    for step, row_id, template_id, _ in trainer.generated:
        assert template_id == the_chooser.choose(row_id, step).id == mixed.group_templates(row_id, step)[0].id


def test_cli_mixed_groups_with_sapo_reward_and_evaluation_during_training(model_dir, format_pool, tmp_path, capsys):
    import yaml

    from paft_rl.cli import main
    from paft_rl.selection.adaptive import STATE_FILE

    recipe = dict(model_name_or_path=str(model_dir), task="synth_arith", pool=str(format_pool),
                  output_dir=str(tmp_path / "run"), group_templates="mixed", templates_per_group=2, num_generations=G,
                  per_device_train_batch_size=8, per_device_eval_batch_size=4, max_completion_length=4, max_steps=2,
                  save_steps=2, template_draw="sapo_reward", sapo_every=1, eval_strategy="steps", eval_steps=2,
                  eval_data_limit=2, data_limit=8, report_to="none", bf16=False, use_cpu=True, logging_steps=1,
                  learning_rate=0.05, rewards=["helpers.digit_share", "template_format"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["grpo", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    state = json.loads((tmp_path / "run" / "checkpoint-2" / STATE_FILE).read_text())
    assert sum(state["reward_count"].values()) == 2 * 8  # each completion's reward went to its own template
    assert abs(sum(state["weights"].values()) - 1) < 1e-6
    assert "'eval_paft/reward_template_mean'" in out and "'eval_paft/reward_by_template/h0'" in out
    assert "'rewards/template_format/mean'" in out


# ---------------------------------------------------------------------------- the draw
def test_group_templates_are_distinct_and_a_pure_function():
    mixed = chooser().grouped(3)
    draws = {row: [t.id for t in mixed.group_templates(row, 0)] for row in range(40)}
    assert all(len(set(ids)) == 3 for ids in draws.values())
    assert draws == {row: [t.id for t in chooser().grouped(3).group_templates(row, 0)] for row in range(40)}
    assert len({tuple(ids) for ids in draws.values()}) > 10  # rows draw different sets and orders
    assert [mixed.choose(7, 0, slot).id for slot in range(3)] == draws[7]
    assert draws[7] != [t.id for t in mixed.group_templates(7, 1)] or draws[8] != [
        t.id for t in mixed.group_templates(8, 1)]  # a new step draws anew


def test_group_templates_follow_draw_weights():
    from paft_rl.selection.adaptive import AdaptiveWeights

    base = chooser()
    adaptive = AdaptiveWeights(base.pool, "sapo_reward", every=1, temperature=0.0)
    adaptive.weights = {"a1": 0.0, "a2": 0.0, "a3": 1.0, "a4": 0.0, "a5": 0.0, "a6": 0.0}  # argmax: one template
    mixed = base.following(adaptive).grouped(3)
    firsts, others = set(), set()
    for row in range(60):
        ids = [t.id for t in mixed.group_templates(row, 0)]
        firsts.add(ids[0])
        others.update(ids[1:])
        assert len(set(ids)) == 3
    assert firsts == {"a3"} and others == {"a1", "a2", "a4", "a5", "a6"}  # zero weights: after, uniformly
    adaptive.weights = {"a1": 0.5, "a2": 0.5, "a3": 0.0, "a4": 0.0, "a5": 0.0, "a6": 0.0}
    assert all({t.id for t in mixed.group_templates(row, 0)[:2]} == {"a1", "a2"} for row in range(30))


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("overrides, message", [
    (dict(templates_per_group=8), "templates_per_group 8 exceeds num_generations 4: a group of 4 completions"),
    (dict(templates_per_group=3), "templates_per_group 3 does not divide num_generations 4: .* use one of 1, 2, 4$"),
    (dict(template_draw="top", template_id="a1"), "group_templates 'mixed' .* template_draw 'top' trains one"),
    (dict(template_draw="fixed", fixed_template="{question}"), "template_draw 'fixed' trains one"),
    (dict(group_templates="same", templates_per_group=2), "templates_per_group is set but group_templates is 'same'"),
    (dict(group_templates="mix"), "group_templates.*must be one of same, mixed"),
])
def test_options_that_cannot_hold_are_refused(overrides, message, tmp_path):
    with pytest.raises(UserError, match=message):
        group_args(tmp_path, **overrides)


def test_cli_refuses_more_templates_than_the_pool_trains_before_loading_weights(model_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    from transformers import AutoModelForCausalLM

    from paft_rl.cli import main

    def no_weights(*args, **kwargs):
        raise AssertionError("model weights loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_weights)
    pool = write_pool(tmp_path / "pool.jsonl")  # 6 train templates
    code = main(["grpo", "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool),
                 "--output_dir", str(tmp_path / "run"), "--group_templates", "mixed", "--num_generations", "8",
                 "--per_device_train_batch_size", "8", "--data_limit", "8", "--max_completion_length", "8",
                 "--report_to", "none"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, message
    assert message.endswith("templates_per_group 8 exceeds the 6 train templates of pool.jsonl: lower "
                            "templates_per_group to at most 6, or use a pool with more train templates"), message


# ---------------------------------------------------------------------------- speed
@pytest.mark.slow
def test_bench_quick_times_mixed_against_same_groups():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, str(root / "bench" / "grpo_mixed.py"), "--quick"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"grpo_mixed_step_time_ratio \d+\.\d{3}", lines[-1]), lines[-3:]
    sides = {line.split(":")[0]: line for line in lines if line.startswith(("mixed: ", "same: "))}
    assert "; 4.00 templates per group;" in sides["mixed"] and "; 1.00 templates per group;" in sides["same"]
    prefill = {name: int(re.search(r"ideal prefix cache (\d+)$", line).group(1)) for name, line in sides.items()}
    assert prefill["mixed"] > 2 * prefill["same"]  # a same-template group's G prompts share one prefix
    assert any(re.fullmatch(r"padding: mixed batches pad to \d+\.\d\dx .*", line) for line in lines)


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu():
    """bench/gpu_check.sh --cpu: the GPU check's three GRPO sides and its SFT under DeepSpeed ZeRO-2, tiny model."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is optional: pip install paft-rl[deepspeed]")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, "PYTHONPATH": str(root)}
    result = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--cpu"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for side in ("same", "mixed", "plain_trl"):
        assert any(re.fullmatch(rf"grpo {side}: median step \d+\.\d+ s \(IQR .*, 2 steps\); peak memory .*", line)
                   for line in lines), side
    for ratio in ("grpo_same_vs_trl_step_time_ratio", "grpo_mixed_vs_same_step_time_ratio"):
        assert any(re.fullmatch(rf"{ratio} \d+\.\d{{3}}", line) for line in lines), ratio
    assert any(re.fullmatch(r"sft zero2: 3 steps, median step \d+\.\d+ s, peak memory n/a on CPU, loss .*", line)
               for line in lines), lines[-5:]
    assert lines[-1] == '{"sft_zero2_exit_status": 0}'


# ---------------------------------------------------------------------------- resume and two processes
def record_of(generated) -> list:
    return [tuple(map(str, entry)) for entry in generated]


def test_resume_inside_a_generation_cycle_keeps_each_completions_template(model_dir, tmp_path):
    # num_iterations 2: one generation serves two optimizer steps; checkpoint-1 is saved inside the first cycle.
    cycle = dict(num_iterations=2, save_strategy="steps", save_steps=1, max_steps=4, templates_per_group=2, rows=12)
    rows = cycle.pop("rows")
    uninterrupted, _ = train(model_dir, group_args(tmp_path / "a", **cycle), rows=rows)
    first, _ = train(model_dir, group_args(tmp_path / "b", **cycle), rows=rows, callbacks=[StopAfter(1)])
    second, dataset = train(model_dir, group_args(tmp_path / "b", **cycle), rows=rows,
                            resume=str(tmp_path / "b" / "checkpoint-1"))
    whole, before, after = (record_of(t.generated) for t in (uninterrupted, first, second))
    assert [entry[0] for entry in whole] == ["0"] * 8 + ["2"] * 8  # generations at steps 0 and 2
    assert [entry[0] for entry in after] == ["1"] * 8 + ["2"] * 8  # the cycle regenerated, then on schedule
    assert [entry[1:] for entry in after] == [entry[1:] for entry in whole]  # same (row, template, prompt) pairs
    assert [entry[1:] for entry in before] == [entry[1:] for entry in whole[:8]]
    args = group_args(tmp_path / "b", **cycle)
    the_chooser = build_chooser(args, resolve_task(args)).grouped(2)
    assert_mixed_groups(uninterrupted.generated, the_chooser, dataset, 2, steps=(0, 2))


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_agree_on_every_completions_template(tmp_path):
    """6 completions per rank, groups of 4: the middle group of each generation batch is split over the ranks, its
    first template block generated on rank 0 and its second on rank 1."""
    model_dir = make_tiny_model_dir(tmp_path)
    result = torchrun([__file__, str(model_dir), str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    by_step = defaultdict(list)  # gather order: rank 0's completions, then rank 1's
    for record in records:
        for entry in record["generated"]:
            by_step[entry[0]].append(entry)
    generated = [entry for step in sorted(by_step) for entry in by_step[step]]
    args = worker_args(str(tmp_path / "check"), processes=1)  # the same draws, checked in this one process
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    assert_mixed_groups(generated, build_chooser(args, task).grouped(2), dataset, 2)
    on_rank = [{tuple(entry[:2]) for entry in record["generated"]} for record in records]
    assert on_rank[0] & on_rank[1], "expected a group whose completions are generated on both ranks"
    assert records[0]["weights"] == records[1]["weights"]


def worker_args(output_dir: str, processes: int = 2) -> PaftGRPOConfig:
    return group_args(output_dir, per_device_train_batch_size=12 // processes, templates_per_group=2, seed=1)


def mixed_worker(model_dir: str, output_dir: str) -> None:
    from helpers import digit_share, weights_digest

    args = worker_args(output_dir)
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    trainer = recording_trainer_class()(model_dir, [digit_share], args, dataset, processing_class=make_tiny_tokenizer())
    trainer.generated = []
    trainer.train()
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    record = {"generated": trainer.generated, "weights": weights_digest(trainer.model)}
    (Path(output_dir) / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    mixed_worker(*sys.argv[1:3])
    from paft_rl.cli import close_process_group, leave_distributed_run

    if close_process_group():  # as the CLI does: a finished rank could otherwise abort at teardown
        leave_distributed_run(0)
