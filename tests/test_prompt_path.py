"""One prompt path: what the SFT trainer's model reads is what evaluation (generation and loglik) feeds it, and the
collator tokenises prompt-completion pairs as TRL's own SFT data preparation does."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from paft_rl.eval import EvalSettings, evaluate
from paft_rl.eval import backends as eval_backends
from paft_rl.formatting import PromptFormat, encode_example
from paft_rl.tasks import get_task, load_rows
from paft_rl.trainers.data import build_dataset, example_fields
from paft_rl.trainers.draws import TemplateChooser, UniformDraw
from paft_rl.trainers.grpo import PaftGRPOTrainer
from paft_rl.trainers.sft import PaftSFTCollator
from paft_rl.training import recipe_configs, train_grpo, train_sft
from prompt_pool import PromptPool, Template

SYSTEM = "You are terse."
TEMPLATES = [("q-first", "Question: {question}\n{options}\nAnswer:"),
             ("options-first", "Options:\n{options}\n{question}\nThe answer is")]
ROWS, SEED = 4, 3


def write_pool(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": tid, "text": text, "split": "train"}) + "\n" for tid, text in TEMPLATES))
    return path


def prompt_part(batch, i: int) -> list[int]:
    """The prompt tokens of example ``i`` of a collated batch: the unpadded tokens that carry no loss."""
    length = int(batch["attention_mask"][i].sum())
    return [t for t, label in zip(batch["input_ids"][i, :length].tolist(), batch["labels"][i, :length].tolist())
            if label == -100]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """SFT of the tiny model with a system prompt (one step over four rows), and what its model was given: per
    (template, row), the prompt token ids the collator produced."""
    root = tmp_path_factory.mktemp("prompt-path")
    pool = write_pool(root / "pool.jsonl")
    seen: dict[tuple[str, str], list[int]] = {}
    original = PaftSFTCollator.__call__

    def recording(self, rows, step, packing=None, evaluation=False):
        batch = original(self, rows, step, packing, evaluation)
        _, _, template_ids = self.texts(rows, step, evaluation)
        for i, (row, template_id) in enumerate(zip(rows, template_ids)):
            seen[(template_id, str(row["row_id"]))] = prompt_part(batch, i)
        return batch

    PaftSFTCollator.__call__ = recording
    try:
        args, model_args = recipe_configs("sft", {
            "model_name_or_path": str(tiny_model), "task": "synth_mc", "pool": str(pool),
            "output_dir": str(root / "run"), "data_limit": ROWS, "max_steps": 1, "seed": SEED,
            "per_device_train_batch_size": ROWS, "learning_rate": 1e-2, "max_length": 512, "report_to": "none",
            "save_strategy": "no", "bf16": False, "use_cpu": True, "prompt_format": "chat", "system_prompt": SYSTEM})
        result = train_sft(args, model_args)
    finally:
        PaftSFTCollator.__call__ = original
    assert len(seen) == ROWS  # every row of the one step was recorded
    return Path(result.output_dir), pool, seen


def test_grpo_generates_from_the_prompt_evaluation_gives(tiny_model, tmp_path, monkeypatch):
    """The GRPO leg: the token ids TRL's GRPOTrainer generates rollouts from equal the evaluation's prompt ids."""
    pool = write_pool(tmp_path / "pool.jsonl")
    keys: list[tuple[str, str]] = []
    rollout_ids: list[list[int]] = []
    render, tokenize = PaftGRPOTrainer.render_inputs, PaftGRPOTrainer._tokenize_prompts

    def recording_render(self, inputs, step):
        rendered, template_ids = render(self, inputs, step)
        keys.extend((template_id, str(row["row_id"])) for row, template_id in zip(inputs, template_ids))
        return rendered, template_ids

    def recording_tokenize(self, prompts):
        prompt_ids, *rest = tokenize(self, prompts)
        rollout_ids.extend(list(ids) for ids in prompt_ids)
        return (prompt_ids, *rest)

    monkeypatch.setattr(PaftGRPOTrainer, "render_inputs", recording_render)
    monkeypatch.setattr(PaftGRPOTrainer, "_tokenize_prompts", recording_tokenize)
    args, model_args = recipe_configs("grpo", {
        "model_name_or_path": str(tiny_model), "task": "synth_mc", "pool": str(pool),
        "output_dir": str(tmp_path / "run"), "data_limit": ROWS, "max_steps": 1, "seed": SEED,
        "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 4, "learning_rate": 1e-2,
        "report_to": "none", "save_strategy": "no", "bf16": False, "use_cpu": True, "prompt_format": "chat",
        "system_prompt": SYSTEM})
    result = train_grpo(args, model_args)
    assert len(keys) == len(rollout_ids) >= 2
    assert all(text.startswith(f"<|system|>{SYSTEM}</s>") for text in map(decode(tiny_model), rollout_ids))
    monkeypatch.undo()
    requests = recorded_requests(monkeypatch, "generate")
    evaluate(eval_settings(Path(result.output_dir), pool, tmp_path / "eval"))
    evaluated = {request.key: request.prompt_ids for request in requests}
    for key, ids in zip(keys, rollout_ids):
        assert evaluated[key] == ids


def decode(model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model).decode


def eval_settings(model: Path, pool: Path, out: Path, **overrides) -> EvalSettings:
    """Evaluation of the training rows (same split, count and seed) with every template of the training pool."""
    values = dict(task="synth_mc", models=[str(model)], out=str(out), templates=str(pool),
                  split=get_task("synth_mc").train_split, limit=ROWS, seed=SEED, max_new_tokens=1,
                  prompt_format="chat", system_prompt=SYSTEM, progress=False)
    return EvalSettings(**{**values, **overrides})


def recorded_requests(monkeypatch, method: str) -> list:
    """The requests the evaluation hands the HF backend (``generate`` or ``score_options``), recorded."""
    requests = []
    original = getattr(eval_backends.HFBackend, method)

    def record(self, batch, *args, **kwargs):
        requests.extend(batch)
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(eval_backends.HFBackend, method, record)
    return requests


def test_the_evaluated_prompt_is_the_trained_prompt(trained, tmp_path, monkeypatch):
    model, pool, seen = trained
    text_of = decode(model)
    requests = recorded_requests(monkeypatch, "generate")
    _, records = evaluate(eval_settings(model, pool, tmp_path / "eval"))
    prompts = {(r["template"], r["row_id"]): r["prompt"] for r in records}
    generated_ids = {request.key: request.prompt_ids for request in requests}
    for key, trained_ids in seen.items():
        trained_text = text_of(trained_ids)
        assert trained_text.startswith(f"<|system|>{SYSTEM}</s><|user|>") and trained_text.endswith("<|assistant|>")
        assert prompts[key] == trained_text  # the string the evaluation records as the model's input
        assert generated_ids[key] == trained_ids  # and the very token ids it generates from

    _, without = evaluate(eval_settings(model, pool, tmp_path / "no-system", system_prompt=None))
    other = {(r["template"], r["row_id"]): r["prompt"] for r in without}
    for key, trained_ids in seen.items():
        assert other[key] != text_of(trained_ids) and SYSTEM not in other[key]


def test_loglik_scores_options_after_the_trained_prompt(trained, tmp_path, monkeypatch):
    model, pool, seen = trained
    requests = recorded_requests(monkeypatch, "score_options")
    _, records = evaluate(eval_settings(model, pool, tmp_path / "loglik", scoring="loglik"))
    context_ids = {request.key: request.context_ids for request in requests}
    assert set(seen) <= set(context_ids)
    for key, trained_ids in seen.items():
        assert context_ids[key] == trained_ids
    assert all(record["prompt"].startswith(f"<|system|>{SYSTEM}</s>") for record in records)


# -------------------------------------------------------------------- the collator against TRL's own tokenisation
def bos_tokenizer(tiny_model: Path):
    """The tiny tokenizer made to put a BOS before plain text, as Llama's does."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)])
    return tokenizer


def collated_and_trl(tiny_model: Path, tokenizer, templates, chat: bool, tmp_path: Path):
    """The collator's batch for a few synth_mc rows, and TRL's `SFTTrainer` preparation of the same prompts and
    reference completions as a prompt-completion dataset (conversational for chat), in row order."""
    from trl import SFTConfig, SFTTrainer

    task = get_task("synth_mc")
    rows = build_dataset(task, load_rows(task, limit=6, seed=0)).to_list()
    chooser = TemplateChooser(UniformDraw(PromptPool([Template(tid, text) for tid, text in templates], name="p"), 0))
    system = SYSTEM if chat else None
    batch = PaftSFTCollator(tokenizer, chooser, PromptFormat(chat, system))(rows, step=0)
    pairs, rendered = [], []
    for row in rows:
        rendered.append((chooser.render(chooser.choose(row["row_id"], 0), example_fields(row)), row["target"]))
        prompt = PromptFormat(chat, system).build(rendered[-1][0])
        completion = [{"role": "assistant", "content": row["target"]}] if chat else row["target"]
        pairs.append({"prompt": prompt, "completion": completion})
    config = SFTConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, bf16=False, max_length=None)
    trainer = SFTTrainer(model=str(tiny_model), args=config, train_dataset=datasets.Dataset.from_list(pairs),
                         processing_class=tokenizer)
    return batch, list(trainer.train_dataset), rendered


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_collator_ids_equal_trl_prompt_completion_tokenisation(tiny_model, tmp_path, chat, bos):
    from transformers import AutoTokenizer

    tokenizer = bos_tokenizer(tiny_model) if bos else AutoTokenizer.from_pretrained(tiny_model)
    batch, prepared, rendered = collated_and_trl(tiny_model, tokenizer, TEMPLATES, chat, tmp_path)
    for i, (trl_row, (text, target)) in enumerate(zip(prepared, rendered, strict=True)):
        length = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :length].tolist() == trl_row["input_ids"]
        assert batch["labels"][i, :length].tolist() == trl_row["labels"]  # loss on the same completion tokens
        # SAPO scores a template on the same sequence (`formatting.encode_example`), prompt boundary included.
        ids, prompt_length = encode_example(tokenizer, text, target, PromptFormat(chat, SYSTEM if chat else None))
        assert ids == trl_row["input_ids"] and prompt_length == trl_row["labels"].count(-100)
    if bos and not chat:
        assert prepared[0]["input_ids"][0] == tokenizer.bos_token_id  # the case the BOS handling is about


def test_plain_prompt_ending_in_a_space_keeps_its_own_tokens_where_trl_merges_them(tiny_model, tmp_path):
    """TRL tokenises prompt + completion as one string and starts the completion where it diverges from the prompt
    alone: a trailing space merges into the first answer token, so TRL trains on a prompt that lacks the space the
    model is given at inference (TRL warns about it). The collator keeps the prompt's own tokens, which are the
    ones generation and loglik scoring start from."""
    from transformers import AutoTokenizer

    from paft_rl.formatting import prompt_text, tokenize_prompt_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    spaced = [("spaced", "Question: {question}\n{options}\nAnswer: ")]
    batch, prepared, _ = collated_and_trl(tiny_model, tokenizer, spaced, False, tmp_path)
    task = get_task("synth_mc")
    rows = load_rows(task, limit=6, seed=0)
    differs = 0
    for i, row in enumerate(rows):
        rendered = PromptPool([Template(*spaced[0])], name="p").render(Template(*spaced[0]), task.example(row).fields)
        (inference_ids,) = tokenize_prompt_texts(tokenizer, [prompt_text(tokenizer, rendered)], False)
        assert prompt_part(batch, i) == inference_ids
        trl_prompt = [t for t, label in zip(prepared[i]["input_ids"], prepared[i]["labels"]) if label == -100]
        differs += trl_prompt != inference_ids
    assert differs > 0
