"""TRL's SFT data options with per-example templates: packing (bfd, bfd_split, wrapped), padding-free,
completion_only_loss, assistant_only_loss, truncation_mode and pad_to_multiple_of behave as in TRL, or stop
with one line before the model loads."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import chooser
from tiny import make_tiny_model_dir, make_tiny_tokenizer
from transformers import AutoModelForCausalLM

from paft_rl.cli import main as cli
from paft_rl.configs import PaftSFTConfig
from paft_rl.formatting import PromptFormat
from paft_rl.tasks import get_task, load_rows
from paft_rl.trainers import PaftSFTCollator, PaftSFTTrainer, build_dataset
from paft_rl.trainers.preflight import resolve_task

CHAT = PromptFormat(chat=True)
MAX_LENGTH = 256  # longer than any example here, so only packing and the truncation tests cut


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def rows():
    task = get_task("synth_arith")
    return build_dataset(task, load_rows(task, limit=6, seed=0)).to_list()


def collator(**options) -> PaftSFTCollator:
    return PaftSFTCollator(make_tiny_tokenizer(), chooser(), CHAT, **{"max_length": MAX_LENGTH, **options})


def rendered_ids(rows, step=0) -> list[list[int]]:
    """Each example's token ids as the plain collator renders them (its own template, prompt + completion)."""
    plain = collator(max_length=None)
    return [example["input_ids"] for example in plain.examples(rows, step, packing=False)]


def summed_loss(model, batch) -> float:
    """Sum of the next-token losses over the labelled tokens of a batch (padded or padding-free)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[:, :-1]  # as TRL trains (a cache hides packing)
    labels = batch["labels"][:, 1:]
    return float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                   reduction="sum"))


# ---------------------------------------------------------------------------- the collator
def test_bfd_packing_is_one_padding_free_row_of_the_examples_with_their_templates(rows, model_dir):
    packed = collator(packing=True)(rows, step=0)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 1
    expected = rendered_ids(rows)
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    segments = [packed["input_ids"][0, a:b].tolist() for a, b in zip(starts, starts[1:] + [None])]
    assert sorted(segments) == sorted(expected)  # every example once, whole, each with its own template's tokens
    assert len({template for template in collator().texts(rows, 0)[2]}) > 1
    # Attention stays inside each example: the packed row scores exactly what the padded batch scores.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert summed_loss(model, packed) == pytest.approx(summed_loss(model, collator()(rows, step=0)), rel=1e-4)


def test_bfd_truncates_and_bfd_split_keeps_overflow(rows):
    longest = max(len(ids) for ids in rendered_ids(rows))
    short = longest - 5
    bfd = PaftSFTCollator(make_tiny_tokenizer(), chooser(), CHAT, max_length=short, packing=True)
    split = PaftSFTCollator(make_tiny_tokenizer(), chooser(), CHAT, max_length=short, packing=True,
                            packing_strategy="bfd_split")
    total = sum(len(ids) for ids in rendered_ids(rows))
    assert bfd(rows, 0)["input_ids"].shape[1] < total  # overflow dropped (TRL's bfd)
    assert split(rows, 0)["input_ids"].shape[1] == total  # overflow kept as its own segment


def test_wrapped_packing_fills_rows_of_max_length(rows):
    wrapped = collator(packing=True, packing_strategy="wrapped", max_length=64)(rows, step=0)
    flat = [t for ids in rendered_ids(rows) for t in ids]
    width = wrapped["input_ids"].shape[1]
    assert width == 64 and wrapped["input_ids"].shape[0] == -(-len(flat) // 64)
    kept = wrapped["input_ids"][wrapped["attention_mask"].bool()].tolist()
    assert sorted(kept) == sorted(flat)  # every token, cut into full rows (the last one padded)


def test_padding_free_flattens_without_packing(rows, model_dir):
    flat = collator(padding_free=True)(rows, step=0)
    assert flat["input_ids"].shape == (1, sum(len(ids) for ids in rendered_ids(rows)))
    assert (flat["position_ids"][0] == 0).sum() == len(rows)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert summed_loss(model, flat) == pytest.approx(summed_loss(model, collator()(rows, step=0)), rel=1e-4)


def test_completion_only_loss_false_trains_on_the_prompt_too(rows):
    tokenizer = make_tiny_tokenizer()
    full = collator(completion_only_loss=False)(rows, step=0)
    masked = collator()(rows, step=0)
    for i in range(len(rows)):
        length = int(full["attention_mask"][i].sum())
        assert full["labels"][i, :length].tolist() == full["input_ids"][i, :length].tolist()
        trained = [t for t in masked["labels"][i].tolist() if t != -100]
        assert tokenizer.decode(trained).startswith(rows[i]["target"])


def test_truncation_mode_keep_end_keeps_the_completion(rows):
    tokenizer = make_tiny_tokenizer()
    cut = 12
    start = PaftSFTCollator(tokenizer, chooser(), CHAT, max_length=cut)(rows, 0)
    end = PaftSFTCollator(tokenizer, chooser(), CHAT, max_length=cut, truncation_mode="keep_end")
    batch = end(rows, 0)
    for i, ids in enumerate(rendered_ids(rows)):
        assert batch["input_ids"][i].tolist() == ids[-cut:]
        assert start["input_ids"][i].tolist() == ids[:cut]
        assert batch["labels"][i, -1].item() == tokenizer.eos_token_id  # the completion's end is still trained


def test_pad_to_multiple_of(rows):
    assert collator(pad_to_multiple_of=32)(rows, 0)["input_ids"].shape[1] % 32 == 0
    assert collator(pad_to_multiple_of=32, padding_free=True)(rows, 0)["input_ids"].shape[1] % 32 == 0


# ---------------------------------------------------------------------------- the trainer
class RecordingTrainer(PaftSFTTrainer):
    """Keeps the batches the model is given (input ids, position ids, labels)."""

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.seen.append({k: v.clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return super().compute_loss(model, inputs, *args, **kwargs)


def sft_trainer(model_dir, tmp_path, **options):
    settings = dict(task="synth_arith", max_steps=2, per_device_train_batch_size=4, report_to="none", use_cpu=True,
                    bf16=False, seed=1, save_strategy="no", learning_rate=0.05, max_length=MAX_LENGTH)
    args = PaftSFTConfig(output_dir=str(tmp_path / "out"), **{**settings, **options})
    task = resolve_task(args)
    tokenizer = make_tiny_tokenizer()
    trainer = RecordingTrainer(str(model_dir), args, load_rows(task, limit=16, seed=0), processing_class=tokenizer)
    trainer.seen = []
    return trainer


@pytest.mark.parametrize("options", [dict(packing=True), dict(packing=True, packing_strategy="wrapped"),
                                     dict(padding_free=True), dict(assistant_only_loss=True)],
                         ids=["bfd", "wrapped", "padding_free", "assistant_only_loss"])
def test_trainer_trains_with_trl_data_option(options, model_dir, tmp_path):
    trainer = sft_trainer(model_dir, tmp_path, **options)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert len(trainer.seen) == 2 and trainer.args.packing == options.get("packing", False)
    first = trainer.seen[0]
    if options.get("packing") and options.get("packing_strategy") != "wrapped" or options.get("padding_free"):
        assert first["input_ids"].shape[0] == 1 and "attention_mask" not in first
        assert (first["position_ids"][0] == 0).sum() == 4  # the 4 examples of the batch, each restarting at 0
    elif options.get("packing"):
        assert first["input_ids"].shape[1] == MAX_LENGTH
    else:
        assert first["input_ids"].shape[0] == 4
        assert all((labels != -100).sum() < mask.sum() for labels, mask in zip(first["labels"],
                                                                                first["attention_mask"]))


def run_cli(model_dir, tmp_path, capsys, *extra):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "text": f"{i}: {{question}}", "split": "train"}) + "\n"
                            for i in ("a", "b")))
    code = cli(["sft", "--model_name_or_path", str(model_dir), "--task", "synth_arith", "--pool", str(pool),
                "--output_dir", str(tmp_path / "out"), "--data_limit", "8", "--max_steps", "1", "--report_to", "none",
                "--per_device_train_batch_size", "4", "--bf16", "false", *extra])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("extra, expected", [
    (["--assistant_only_loss", "true", "--prompt_format", "plain"], "assistant_only_loss needs chat prompts"),
    (["--packing", "true", "--max_length", "none"], "set max_length"),
    (["--chat_template_path", "template.jinja"], "drop chat_template_path"),
])
def test_unsupported_combinations_stop_with_one_line(extra, expected, model_dir, tmp_path, capsys):
    code, err = run_cli(model_dir, tmp_path, capsys, *extra)
    assert code == 2 and expected in err[-1], err
    assert not (tmp_path / "out").exists()


def test_cli_trains_with_packing(model_dir, tmp_path, capsys):
    code, err = run_cli(model_dir, tmp_path, capsys, "--packing", "true", "--max_length", "128")
    assert code == 0, err[-3:]


def test_pad_token_and_shuffle_dataset_apply_as_in_trl(model_dir, tmp_path, rows):
    trainer = sft_trainer(model_dir, tmp_path, pad_token="<|system|>", shuffle_dataset=True)
    tokenizer = trainer.paft_collator.tokenizer
    batch = trainer.paft_collator(rows, 0)
    pad_id = tokenizer.convert_tokens_to_ids("<|system|>")
    assert tokenizer.pad_token_id == pad_id and (batch["input_ids"][batch["attention_mask"] == 0] == pad_id).all()
    assert (batch["attention_mask"] == 0).any()
    shuffled = trainer.train_dataset["row_id"]
    assert sorted(shuffled) == list(range(16)) and shuffled != list(range(16))  # TRL shuffles once, seeded
