"""The evaluation's wave decoder computes exactly what `generate` computes, on tiny models built here."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from paft_rl.eval.backends import HFBackend, Request, plan_waves
from paft_rl.eval.greedy import WaveGreedy, split_by_padding, supports_wave_greedy
from paft_rl.eval.models import load_tokenizer, resolve_model
from tests.tiny import make_tiny_model_dir

HEADERS = ["<|user|>Pick the right option. Respond with the option text only.", "Question time! Read carefully:"]
QUESTIONS = ["Which word is an animal? dog chair", "Which of these numbers is the largest? 12 47 3 28", "Ava has 12",
             "red blue green", "What colour is the sky on a clear day, and why does it look that way to us?",
             "x", "Name the capital city of France.", "Two plus two"]


def grid_requests(tokenizer) -> list[Request]:
    """Two templates (each a shared header) over questions of very different lengths."""
    return [Request((f"t{t}", str(q)), tokenizer(header + " " + question)["input_ids"])
            for t, header in enumerate(HEADERS) for q, question in enumerate(QUESTIONS)]


def run(backend: HFBackend, requests, use_waves: bool) -> dict:
    waves = backend.waves
    backend.waves = waves if use_waves else None
    collected = []
    backend.generate(requests, collected.extend)
    backend.waves = waves
    return {key: (generation.text, generation.tokens) for key, generation in collected}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_wave_decoder_equals_generate(tmp_path, arch):
    source = resolve_model(str(make_tiny_model_dir(tmp_path, arch)))
    tokenizer = load_tokenizer(source)
    requests = grid_requests(tokenizer)
    # Small limits: several prefill groups per template, decode batches that mix templates.
    backend = HFBackend(source, tokenizer, max_new_tokens=8, batch_size=5, max_batch_tokens=60)
    assert backend.waves is not None
    # A random tiny model rarely writes its end token; end rows on a token it writes often, so rows stop at
    # different steps and the decoder has to drop finished rows.
    plain = run(backend, requests, use_waves=False)
    written = [backend.model.generate(torch.tensor([r.prompt_ids]), max_new_tokens=8, do_sample=False)[0].tolist()
               [len(r.prompt_ids):] for r in requests]
    frequent = Counter(token for tokens in written for token in tokens).most_common(1)[0][0]
    backend.eos_ids = sorted({*backend.eos_ids, frequent})
    backend.waves = WaveGreedy(backend.model, backend.eos_ids, tokenizer.pad_token_id, 8, 60)

    expected = run(backend, requests, use_waves=False)
    assert run(backend, requests, use_waves=True) == expected
    lengths = {tokens for _, tokens in expected.values()}
    assert min(lengths) < 8 and max(lengths) == 8, lengths  # some rows ended early, some ran to the budget
    assert expected != plain  # the extra end token did cut rows short
    # Without prefix sharing, and with one row per decode batch, the tokens are the same again.
    backend.share_prefix = False
    assert run(backend, requests, use_waves=True) == expected
    backend.share_prefix, backend.batch_size = True, 1
    assert run(backend, requests, use_waves=True) == expected


def test_model_with_logits_rules_goes_through_generate(tmp_path):
    source = resolve_model(str(make_tiny_model_dir(tmp_path)))
    backend = HFBackend(source, load_tokenizer(source), max_new_tokens=4)
    assert supports_wave_greedy(backend.model)
    backend.model.generation_config.repetition_penalty = 1.3  # only `generate` applies it
    assert not supports_wave_greedy(backend.model)
    backend.model.generation_config.repetition_penalty = 1.0
    backend.model.set_attn_implementation("eager")
    assert not supports_wave_greedy(backend.model)


def test_split_by_padding_least_padded_work():
    # One group: 4 x 10 + 2 = 42; [10, 9] [3, 2]: 20 + 2 + 6 + 2 = 30; [10] [9] [3, 2]: 31.
    assert split_by_padding([10, 9, 3, 2], max_tokens=100, forward_cost=2) == [0, 2]
    # At most 10 padded tokens a group: two rows of 5, then one.
    assert split_by_padding([5, 5, 5], max_tokens=10, forward_cost=100) == [0, 2]
    # A row longer than the budget still gets a group of its own.
    assert split_by_padding([50, 4], max_tokens=10, forward_cost=0) == [0, 1]
    assert split_by_padding([], max_tokens=10) == []


def test_plan_waves_template_major_longest_first():
    requests = [Request(("a", "0"), [1, 2, 3, 4, 9]), Request(("b", "0"), [5, 6, 7, 8, 9, 9]),
                Request(("a", "1"), [1, 2, 3, 4, 9, 9, 9]), Request(("b", "1"), [5, 6, 7, 8, 9])]
    waves = plan_waves(requests, batch_size=3, share_prefix=True)
    assert [[r.key for r in wave] for wave, _ in waves] == [[("a", "1"), ("a", "0"), ("b", "0")], [("b", "1")]]
    assert [prefixes for _, prefixes in waves] == [[4, 4, 4], [4]]
    flat = plan_waves(requests, batch_size=10, share_prefix=False)
    assert [len(r.prompt_ids) for r in flat[0][0]] == [7, 6, 5, 5] and flat[0][1] == [0, 0, 0, 0]


def test_plan_waves_bounded_by_prompt_tokens():
    """A wave is what a killed run can lose: bounded by prompts and by prompt tokens."""
    requests = [Request(("t", str(i)), list(range(100))) for i in range(10)]
    waves = plan_waves(requests, batch_size=64, share_prefix=False, max_wave_tokens=250)
    assert [len(batch) for batch, _ in waves] == [2, 2, 2, 2, 2]
    assert sorted(r.key for batch, _ in waves for r in batch) == sorted(r.key for r in requests)
