"""Resuming from a checkpoint reproduces the template sequence of an uninterrupted run (GRPO and SFT)."""

from __future__ import annotations

import pytest
from helpers import RecordingCollator, StopAfter, digit_share, recording_grpo_trainer
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
from paft_rl.tasks import load_rows
from paft_rl.trainers import PaftSFTTrainer, build_dataset
from paft_rl.trainers.preflight import resolve_task

COMMON = dict(task="synth_arith", max_steps=4, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
              bf16=False, seed=2, logging_steps=1, learning_rate=0.01)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def grpo_run(model_dir, output_dir, stop_at=None, resume=None, **overrides) -> list:
    options = dict(per_device_train_batch_size=4, num_generations=2, max_completion_length=4, **COMMON)
    args = PaftGRPOConfig(output_dir=str(output_dir), **{**options, **overrides})
    task = resolve_task(args)
    dataset = build_dataset(task, load_rows(task, limit=12, seed=0))
    trainer_class = recording_grpo_trainer()
    trainer_class.generated = []
    trainer = trainer_class(str(model_dir), [digit_share], args, dataset, processing_class=make_tiny_tokenizer(),
                            callbacks=[StopAfter(stop_at)] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume)
    return [tuple(map(str, entry)) for entry in trainer.generated]


@pytest.mark.slow
def test_grpo_resume_reproduces_template_sequence(model_dir, tmp_path):
    uninterrupted = grpo_run(model_dir, tmp_path / "a")
    first = grpo_run(model_dir, tmp_path / "b", stop_at=2)
    assert (tmp_path / "b" / "checkpoint-2").is_dir()
    second = grpo_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-2"))
    assert len(uninterrupted) == 4 * 4 and len(first) == 2 * 4
    assert first + second == uninterrupted  # same (step, row, template, prompt) in the same order


def without_step(generated: list) -> list:
    return [entry[1:] for entry in generated]


@pytest.mark.slow
def test_grpo_resume_inside_a_generation_cycle_draws_the_same_templates(model_dir, tmp_path):
    # num_iterations 2: one generation serves two optimizer steps; checkpoint-1 is saved inside the first cycle.
    cycle = dict(num_iterations=2, save_steps=1)
    uninterrupted = grpo_run(model_dir, tmp_path / "a", **cycle)
    assert [step for step, *_ in uninterrupted] == ["0"] * 4 + ["2"] * 4  # generations at steps 0 and 2
    first = grpo_run(model_dir, tmp_path / "b", stop_at=1, **cycle)
    second = grpo_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-1"), **cycle)
    assert [step for step, *_ in second] == ["1"] * 4 + ["2"] * 4  # the cycle regenerated, then on schedule
    assert without_step(second) == without_step(uninterrupted)  # same (row, template, prompt) in the same order
    assert without_step(first) == without_step(uninterrupted[:4])


@pytest.mark.slow
def test_grpo_refuses_a_checkpoint_whose_cycle_cannot_be_restored(model_dir, tmp_path):
    from prompt_pool import UserError

    # steps_per_generation 2 with one micro-batch per step: each step trains on half of a shuffled buffer.
    cycle = dict(steps_per_generation=2, save_steps=1)
    uninterrupted = grpo_run(model_dir, tmp_path / "a", **cycle)
    first = grpo_run(model_dir, tmp_path / "b", stop_at=2, **cycle)
    with pytest.raises(UserError, match=r"checkpoint-1 was saved at step 1.*save_steps: a multiple of 2\)$"):
        grpo_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-1"), **cycle)
    second = grpo_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-2"), **cycle)
    assert first + second == uninterrupted


def test_cli_refuses_an_unrestorable_checkpoint_before_loading_the_model(tmp_path, capsys):
    from paft_rl.cli import main

    (tmp_path / "run" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3}')
    code = main(["grpo", "--model_name_or_path", str(tmp_path / "no-model-here"), "--task", "synth_arith",
                 "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "true", "--num_generations", "2",
                 "--per_device_train_batch_size", "2", "--steps_per_generation", "4", "--gradient_accumulation_steps",
                 "2", "--report_to", "none"])
    message = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "a multiple of 2 steps" in message[-1] and "save_steps" in message[-1], message
    assert not any("Traceback" in line for line in message)


def sft_run(model_dir, output_dir, stop_at=None, resume=None) -> list:
    args = PaftSFTConfig(output_dir=str(output_dir), per_device_train_batch_size=3, gradient_accumulation_steps=2,
                         max_length=256, prompt_format="plain", **COMMON)  # the pre-flight: prompts fit
    task = resolve_task(args)
    trainer = RecordingSFTTrainer(str(model_dir), args, load_rows(task, limit=30, seed=0),
                                  processing_class=make_tiny_tokenizer(),
                                  callbacks=[StopAfter(stop_at)] if stop_at else None)
    trainer.paft_collator.seen = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer.paft_collator.seen


class RecordingSFTTrainer(PaftSFTTrainer):
    collator_class = RecordingCollator


def test_sft_resume_reproduces_template_sequence(model_dir, tmp_path):
    uninterrupted = sft_run(model_dir, tmp_path / "a")
    first = sft_run(model_dir, tmp_path / "b", stop_at=2)
    second = sft_run(model_dir, tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-2"))
    assert len(uninterrupted) == 4 * 2  # 4 steps x 2 accumulated micro-batches
    assert [step for step, _, _ in uninterrupted] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert first + second == uninterrupted
    assert len({t for _, _, ids in uninterrupted for t in ids}) > 3
