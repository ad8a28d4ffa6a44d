"""The trainers used as TRL's are: ``from paft_rl import PaftGRPOConfig, PaftGRPOTrainer``, a model path, the config,
the task's rows as the hub gives them, ``trainer.train()``; the trainer builds the task, the template draws, the
data and the pre-flight itself."""

from __future__ import annotations

import pytest
import torch
from helpers import digit_share
from tiny import make_tiny_model_dir

from paft_rl.tasks import get_task, load_task_pool
from prompt_pool import UserError

# GSM8K rows as the hub gives them: a question and a worked answer ending in "#### N"; no row id, no prompt.
ROWS = [{"question": f"Ava has {a} apples and buys {b} more. How many apples does Ava have now?",
         "answer": f"Ava has {a} + {b} = {a + b} apples.\n#### {a + b}"} for a, b in
        [(3, 4), (12, 5), (7, 9), (20, 2), (6, 6), (15, 8), (9, 1), (4, 13)]]
OPTIONS = dict(task="gsm8k", max_steps=2, learning_rate=0.05, per_device_train_batch_size=4, report_to="none",
               use_cpu=True, bf16=False, save_strategy="no", logging_steps=1, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def pool_texts(split: str, answers: bool = False) -> set[str]:
    """Every text the task's built-in pool renders for the rows with its ``split`` templates (``answers``: each
    followed by its row's reference completion)."""
    task = get_task("gsm8k")
    pool = load_task_pool(task)
    return {pool.render(t, task.example(row).fields) + (task.example(row).target if answers else "")
            for t in pool.subset(split).templates for row in ROWS}


def test_grpo_trainer_takes_hub_rows_and_a_config_as_trl_does(model_dir, tmp_path):
    from paft_rl import PaftGRPOConfig, PaftGRPOTrainer

    seen = []  # what the model was prompted with, as TRL hands it to the rewards

    def recorded_share(prompts, completions, **kwargs):
        seen.extend(prompts)
        return digit_share(prompts, completions, **kwargs)

    trainer = PaftGRPOTrainer(model=str(model_dir), reward_funcs=recorded_share,
                              args=PaftGRPOConfig(output_dir=str(tmp_path / "o"), num_generations=2,
                                                  max_completion_length=4, **OPTIONS),
                              train_dataset=ROWS)
    assert seen == []  # a reward passed in code is called by training only (the pre-flight probes named ones)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    # Chats (the tiny tokenizer has a chat template) whose user turn is a train template of gsm8k's built-in pool
    # rendered with the row, never a held-out one: 2 steps x 4 completions.
    assert len(seen) == 2 * 4 and all(p[-1]["role"] == "user" for p in seen)
    train, heldout = pool_texts("train"), pool_texts("heldout")
    assert all(p[-1]["content"] in train and p[-1]["content"] not in heldout for p in seen)
    assert len({p[-1]["content"] for p in seen}) > 1
    assert set(trainer._logs["extra"]["template_id"]) <= {t.id for t in load_task_pool(get_task("gsm8k")).train}


def test_sft_trainer_takes_hub_rows_and_a_config_as_trl_does(model_dir, tmp_path):
    from paft_rl import PaftSFTConfig, PaftSFTTrainer

    trainer = PaftSFTTrainer(model=str(model_dir), args=PaftSFTConfig(output_dir=str(tmp_path / "o"), max_length=512,
                                                                     prompt_format="plain", **OPTIONS),
                             train_dataset=ROWS)
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"]),
                                            with_kwargs=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    tokenizer = trainer.processing_class
    texts = [tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) for batch in seen
             for ids in batch]
    assert len(texts) == 2 * 4
    # Plain prompts: each sequence is a train template rendered with its row, then that row's worked answer.
    assert set(texts) <= pool_texts("train", answers=True) and len(set(texts)) > 1
    assert not set(texts) & pool_texts("heldout", answers=True)


def test_trainer_defaults_take_the_tasks_data_and_rewards(model_dir, tmp_path):
    """No rows and no rewards: the task's data as ``data`` names it (first ``data_limit`` rows), its own reward."""
    import rewards
    from paft_rl import PaftGRPOConfig, PaftGRPOTrainer

    args = PaftGRPOConfig(output_dir=str(tmp_path / "o"), num_generations=2, max_completion_length=4,
                          **{**OPTIONS, "task": "synth_arith", "data_limit": 6})
    trainer = PaftGRPOTrainer(model=str(model_dir), args=args)
    assert len(trainer.train_dataset) == 6 and trainer.train_dataset["row_id"] == list(range(6))
    assert trainer.reward_funcs == [rewards.get_reward(get_task("synth_arith").reward)]


def test_bad_input_to_the_python_trainer_fails_in_one_line_before_the_model_loads(model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    from paft_rl import PaftGRPOConfig, PaftGRPOTrainer, PaftSFTTrainer

    def refuse(cls, *args, **kwargs):
        raise AssertionError("model weights loaded before the input was checked")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    args = dict(output_dir=str(tmp_path / "o"), num_generations=2, max_completion_length=4, **OPTIONS)
    with pytest.raises(UserError, match=r"^template_id 'nope' is not a train template of "):
        PaftGRPOTrainer(model=str(model_dir), reward_funcs=digit_share, train_dataset=ROWS,
                        args=PaftGRPOConfig(template_draw="top", template_id="nope", **args))
    with pytest.raises(UserError, match=r"^rewards is set \(answer_cue\) and reward_funcs are passed"):
        PaftGRPOTrainer(model=str(model_dir), reward_funcs=digit_share, train_dataset=ROWS,
                        args=PaftGRPOConfig(rewards=["answer_cue"], **args))
    with pytest.raises(UserError, match=r"^dataset for task 'gsm8k' lacks column\(s\) answer"):
        PaftGRPOTrainer(model=str(model_dir), reward_funcs=digit_share, args=PaftGRPOConfig(**args),
                        train_dataset=[{"question": "1 + 1?"}])
    with pytest.raises(UserError, match=r"^the trainer needs args=PaftSFTConfig\(task=\.\.\., \.\.\.\)"):
        PaftSFTTrainer(model=str(model_dir), args=PaftGRPOConfig(**args), train_dataset=ROWS)


# ---------------------------------------------------------------------------- template draws
def test_a_new_draw_is_one_class_and_every_registered_draw_is_an_option():
    from dataclasses import dataclass, fields
    from typing import ClassVar, get_args

    from paft_rl.configs import PaftSFTConfig, TemplateDrawName
    from paft_rl.trainers.draws import DRAWS, TemplateChooser, TemplateDraw
    from prompt_pool import PromptPool, Template

    @dataclass(frozen=True)
    class InTurn(TemplateDraw):
        name: ClassVar[str] = "in_turn"
        summary: ClassVar[str] = "the train templates in turn"

        def template(self, row_id, position, slot=0):
            return self.pool.train[(int(row_id) + position) % len(self.pool.train)]

    pool = PromptPool([Template(f"t{i}", f"{i}: {{question}}") for i in range(3)], name="p")
    chooser = TemplateChooser(InTurn(pool, seed=0), every=2)
    assert [chooser.choose(1, step).id for step in range(6)] == ["t1", "t1", "t2", "t2", "t0", "t0"]
    with pytest.raises(UserError, match="template_draw 'in_turn' trains one template: mixed groups need a pool"):
        chooser.grouped(2)
    # The option's choices and help follow the registry.
    assert get_args(TemplateDrawName) == tuple(DRAWS)
    option = next(f for f in fields(PaftSFTConfig) if f.name == "template_draw")
    assert all(f"{name} ({draw.summary})" in option.metadata["help"] for name, draw in DRAWS.items())
