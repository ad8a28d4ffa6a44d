"""The PAFT trainers in TRL regimes beyond the default one: unscorable rewards, generation cycles longer than an
optimizer step (resume inside them), SAPO's update cadence, and what the trainer changes on the user's config."""

from __future__ import annotations

import logging
from collections import defaultdict

import pytest
from helpers import ARITH_TEMPLATES, RecordLogs, digit_share, recording_grpo_trainer, write_pool
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.configs import PaftGRPOConfig
from paft_rl.tasks import load_rows
from paft_rl.trainers.grpo import TEMPLATE_METRIC
from paft_rl.trainers.preflight import resolve_task

BASE = dict(task="synth_arith", per_device_train_batch_size=4, num_generations=2, max_completion_length=4,
            learning_rate=0.05, report_to="none", use_cpu=True, bf16=False, logging_steps=1, save_strategy="no",
            seed=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def grpo_trainer(model_dir, output_dir, reward=digit_share, rows=12, callbacks=None, **overrides):
    """A recording PaftGRPOTrainer (SAPO's weights, for a sapo draw, built by the trainer from the config)."""
    args = PaftGRPOConfig(output_dir=str(output_dir), **{**BASE, **overrides})
    task = resolve_task(args)
    trainer_class = recording_grpo_trainer()
    trainer_class.generated = []
    return trainer_class(str(model_dir), [reward], args, load_rows(task, limit=rows, seed=0),
                         processing_class=make_tiny_tokenizer(), callbacks=callbacks)


# ---------------------------------------------------------------------------- unscorable completions
def none_for_every_third_row(prompts, completions, row_id, trainer_state, **kwargs):
    """Unscorable (None) for rows 0, 3, 6...; otherwise the optimizer step, so batches differ in reward."""
    return [None if int(row) % 3 == 0 else float(trainer_state.global_step) for row in row_id]


def test_unscorable_completions_are_left_out_of_reward_by_template(model_dir, tmp_path):
    logged = []
    trainer = grpo_trainer(model_dir, tmp_path / "o", reward=none_for_every_third_row, max_steps=2, logging_steps=2,
                           per_device_train_batch_size=8,
                           pool=str(write_pool(tmp_path / "pool.jsonl", ARITH_TEMPLATES[:3])),
                           callbacks=[RecordLogs(logged)])
    trainer.train()
    per_template = defaultdict(list)  # template -> rewards of its scorable completions, over both batches
    per_batch = defaultdict(lambda: defaultdict(list))
    for step, row, template_id, _ in trainer.generated:
        if int(row) % 3:
            per_template[template_id].append(float(step))
            per_batch[template_id][step].append(float(step))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    batch_weighted = {t: mean([mean(v) for v in steps.values()]) for t, steps in per_batch.items()}
    assert per_template and any(int(row) % 3 == 0 for _, row, _, _ in trainer.generated)
    logs = next(entry for entry in logged if any(key.startswith(TEMPLATE_METRIC) for key in entry))
    metrics = {key[len(TEMPLATE_METRIC):]: value for key, value in logs.items() if key.startswith(TEMPLATE_METRIC)}
    expected = {template_id: sum(values) / len(values) for template_id, values in per_template.items()}
    assert any(batch_weighted[t] != pytest.approx(expected[t]) for t in expected)  # the weighting matters here
    assert set(metrics) == set(expected)  # a template whose completions were all unscorable has no mean
    for template_id, value in expected.items():
        assert metrics[template_id] == pytest.approx(value), template_id  # a mean over completions, no zeros


# ---------------------------------------------------------------------------- SAPO's cadence
def test_sapo_updates_at_first_generation_after_each_multiple_of_sapo_every(model_dir, tmp_path):
    trainer = grpo_trainer(model_dir, tmp_path / "o", max_steps=7, steps_per_generation=2, template_draw="sapo_reward",
                           sapo_every=3, sapo_temperature=0.1)
    updates = []
    original = trainer.adaptive.maybe_update

    def recording_update(model, step):
        before = trainer.adaptive.updated_step
        original(model, step)
        if trainer.adaptive.updated_step != before:
            updates.append(step)

    trainer.adaptive.maybe_update = recording_update
    trainer.train()
    assert sorted({step for step, *_ in trainer.generated}) == [0, 2, 4, 6]  # one generation every 2 steps
    assert updates == [0, 4, 6]  # 0; first generation at or after 3; at 6


# ---------------------------------------------------------------------------- what the trainer changes on the config
def test_turning_off_remove_unused_columns_is_logged_once(model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="paft_rl.trainers"):
        trainer = grpo_trainer(model_dir, tmp_path / "o", max_steps=1, remove_unused_columns=True)
    lines = [r.getMessage() for r in caplog.records if "remove_unused_columns" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "row_id" in lines[0]
    assert trainer.args.remove_unused_columns is False
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="paft_rl.trainers"):
        grpo_trainer(model_dir, tmp_path / "p", max_steps=1)  # GRPOConfig's default is already False
    assert not [r for r in caplog.records if "remove_unused_columns" in r.getMessage()]  # nothing changed, no line


def test_save_steps_inside_generation_cycles_are_announced_at_the_start(model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="paft_rl.trainers"):
        grpo_trainer(model_dir, tmp_path / "o", max_steps=1, steps_per_generation=2, save_strategy="steps",
                     save_steps=3)
    lines = [r.getMessage() for r in caplog.records if "save_steps" in r.getMessage()]
    assert len(lines) == 1 and "a multiple of 2" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="paft_rl.trainers"):
        grpo_trainer(model_dir, tmp_path / "p", max_steps=1, steps_per_generation=2, save_strategy="steps",
                     save_steps=4)
    assert not [r for r in caplog.records if "save_steps" in r.getMessage()]


def test_a_second_train_call_draws_what_the_first_drew(model_dir, tmp_path):
    trainer = grpo_trainer(model_dir, tmp_path / "o", max_steps=2)
    trainer.train()
    first = list(trainer.generated)
    trainer.generated.clear()
    trainer.train()  # as bench/overhead.py does: global_step restarts at 0, and so must the draws
    assert [entry[:3] for entry in trainer.generated] == [entry[:3] for entry in first]
