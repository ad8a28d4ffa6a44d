"""PAFT SFT and GRPO trainers in one process on a tiny in-test model: training, templates, collator."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    ARITH_TEMPLATES,
    RecordLogs,
    assert_adapter_trained,
    assert_weights_trained,
    chooser,
    digit_share,
    write_pool,
)
from tiny import make_tiny_model_dir, make_tiny_tokenizer

from paft_rl.cli import main as cli
from paft_rl.configs import PaftGRPOConfig, PaftSFTConfig
from paft_rl.formatting import PromptFormat
from paft_rl.tasks import get_task, load_rows
from paft_rl.trainers import TemplateChooser, build_chooser, build_dataset
from paft_rl.trainers.grpo import TEMPLATE_METRIC
from paft_rl.trainers.preflight import resolve_task
from paft_rl.trainers.sft import PaftSFTCollator
from prompt_pool import Template


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def arith_pool(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("pool") / "arith.jsonl")


def run_args(command, model_dir, pool, output_dir, *extra):
    common = ["--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool),
              "--output_dir", str(output_dir), "--data_limit", "16", "--max_steps", "2", "--seed", "3",
              "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--bf16", "false",
              "--use_cpu", "true"]
    specific = {
        "sft": ["--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--max_length", "128"],
        "grpo": ["--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "6",
                 "--learning_rate", "1e-2", "--rewards", "answer_cue", "length_penalty"],
    }[command]
    if "--rewards" in extra:  # the test's own rewards replace the default ones (a list option is given once)
        specific = specific[:specific.index("--rewards")]
    return [command, *common, *specific, *extra]


LORA = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]


def test_sft_cli_trains_and_saves(model_dir, arith_pool, tmp_path):
    output_dir = tmp_path / "out"
    assert cli(run_args("sft", model_dir, arith_pool, output_dir)) == 0
    assert_weights_trained(model_dir, output_dir)


def test_sft_cli_trains_a_lora_adapter(model_dir, arith_pool, tmp_path):
    output_dir = tmp_path / "out"
    assert cli(run_args("sft", model_dir, arith_pool, output_dir, *LORA)) == 0
    assert_adapter_trained(model_dir, output_dir)


def test_grpo_cli_trains_lora_with_registry_and_dotted_path_rewards(model_dir, arith_pool, tmp_path, capsys):
    # The registry's rewards are 0 for every completion of a random model (no advantage, no gradient); the reward
    # named by its import path varies, so the adapter trains.
    output_dir = tmp_path / "out"
    rewards = ["--rewards", "answer_cue", "length_penalty", "helpers.digit_share"]
    assert cli(run_args("grpo", model_dir, arith_pool, output_dir, *LORA, *rewards)) == 0
    assert_adapter_trained(model_dir, output_dir)
    logged = capsys.readouterr()
    for name in ("answer_cue", "length_penalty", "digit_share"):
        assert f"'rewards/{name}/mean'" in logged.out + logged.err, name


def make_grpo_trainer(model_dir, pool, output_dir, rows=8, peft_config=None, conversational=True, **overrides):
    from paft_rl.trainers.grpo import PaftGRPOTrainer

    options = dict(output_dir=str(output_dir), task="synth_arith", pool=str(pool), max_steps=1,
                   per_device_train_batch_size=8, num_generations=2, max_completion_length=4, learning_rate=0.05,
                   report_to="none", use_cpu=True, bf16=False, logging_steps=1, save_strategy="no", seed=5,
                   prompt_format="chat" if conversational else "plain")
    args = PaftGRPOConfig(**{**options, **overrides})
    task = resolve_task(args)
    return PaftGRPOTrainer(str(model_dir), [digit_share], args, load_rows(task, limit=rows, seed=0),
                           processing_class=make_tiny_tokenizer(), peft_config=peft_config)


@pytest.mark.parametrize("lora, chat", [(False, True), (True, False)], ids=["full-chat", "lora-plain"])
def test_grpo_updates_weights_and_logs_templates(lora, chat, model_dir, arith_pool, tmp_path):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if lora else None
    trainer = make_grpo_trainer(model_dir, arith_pool, tmp_path / "o", peft_config=peft_config,
                                conversational=chat)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    logged = []
    trainer.add_callback(RecordLogs(logged))
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    if lora:  # every lora_B left PEFT's initial zeros; the base weights stayed frozen
        assert changed >= {n for n in before if "lora_B" in n} and all("lora_" in n for n in changed), changed
        assert all(not before[n].any() and after[n].any() for n in before if "lora_B" in n)
    else:
        assert changed
    table = list(trainer._logs["extra"]["template_id"])
    assert len(table) == 8 and set(table) <= {tid for tid, _ in ARITH_TEMPLATES}
    assert len(set(table[0::2])) > 1 and table[0::2] == table[1::2]  # groups of 2 share a template, groups differ
    prompts = list(trainer._logs["prompt"])
    assert prompts[0::2] == prompts[1::2]
    assert all(isinstance(p, list) == chat for p in prompts)  # chat messages or plain text
    metrics = [key for entry in logged for key in entry if key.startswith(TEMPLATE_METRIC)]
    assert {key[len(TEMPLATE_METRIC):] for key in metrics} == set(table)


# ---------------------------------------------------------------------------- templates and collator
def test_template_is_pure_function_of_seed_row_and_block_of_k_steps():
    k3 = chooser(every=3)
    assert [k3.choose(7, step).id for step in range(3)] == [k3.choose(7, 0).id] * 3
    per_block = {k3.choose(row, 0).id for row in range(40)}
    assert len(per_block) > 3  # rows draw different templates
    changed = sum(k3.choose(row, 0).id != k3.choose(row, 3).id for row in range(40))
    assert changed > 10  # a new block redraws
    assert chooser(every=3).choose(11, 4) == k3.choose(11, 4)  # no hidden state


def drawn_ids(template_chooser: TemplateChooser) -> set[str]:
    return {template_chooser.choose(row, step).id for row in range(10) for step in range(5)}


def test_fixed_and_top_use_one_template(arith_pool):
    assert len(drawn_ids(chooser())) > 1  # the same rows and steps draw several templates uniformly
    fixed = chooser(draw="fixed", fixed=Template("user", "Compute: {question}"))
    assert drawn_ids(fixed) == {"user"}
    # `top` as a recipe names it (SAPO's selection writes these two keys): only that pool template, its text rendered.
    args = PaftSFTConfig(output_dir="unused", task="synth_arith", pool=str(arith_pool), template_draw="top",
                         template_id="a4", use_cpu=True, bf16=False)
    task = resolve_task(args)
    top = build_chooser(args, task)
    assert drawn_ids(top) == {"a4"}
    rows = build_dataset(task, load_rows(task, limit=4, seed=0)).to_list()
    prompts, _, template_ids = PaftSFTCollator(make_tiny_tokenizer(), top).texts(rows, step=3)
    assert template_ids == ["a4"] * 4
    assert prompts == [f"Problem -> {task.example(row).fields['question']} ->" for row in rows]


@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "chat"])
def test_collator_trains_on_completion_tokens_only(conversational):
    tokenizer = make_tiny_tokenizer()
    task = get_task("synth_arith")
    rows = build_dataset(task, load_rows(task, limit=3, seed=0)).to_list()
    collator = PaftSFTCollator(tokenizer, chooser(), PromptFormat(conversational, "Be brief."))
    batch = collator(rows, step=0)
    prompts, completions, _ = collator.texts(rows, step=0)
    for i, row in enumerate(rows):
        trained = [t for t in batch["labels"][i].tolist() if t != -100]
        assert tokenizer.decode(trained).startswith(row["target"])
        assert trained[-1] == tokenizer.eos_token_id
        length = int(batch["attention_mask"][i].sum())
        assert tokenizer.decode(batch["input_ids"][i, :length]) == prompts[i] + completions[i]
    if conversational:
        assert prompts[0].startswith("<|system|>Be brief.</s><|user|>") and prompts[0].endswith("<|assistant|>")


def test_collator_redraws_per_block():
    tokenizer = make_tiny_tokenizer()
    task = get_task("synth_arith")
    rows = build_dataset(task, load_rows(task, limit=12, seed=0)).to_list()
    collator = PaftSFTCollator(tokenizer, chooser(every=2))
    assert collator.texts(rows, 0)[2] == collator.texts(rows, 1)[2]
    assert collator.texts(rows, 0)[2] != collator.texts(rows, 2)[2]


def test_config_help_text_on_every_pool_field():
    from dataclasses import fields

    from paft_rl.configs import PaftArguments

    for config in (PaftGRPOConfig, PaftSFTConfig):
        names = {f.name for f in fields(config)}
        for field in fields(PaftArguments):
            if field.init:  # an option (precision_note is set by the config itself)
                assert field.name in names and field.metadata.get("help"), field.name
