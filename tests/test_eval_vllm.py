"""The vLLM backend, for real: runs where vLLM imports (``make vllm-env`` builds such an environment with
the CPU build), skips cleanly elsewhere.

vLLM's CPU attention needs a head size of 32, 64, 80, ..., so the tiny model here has head size 64.
"""

from __future__ import annotations

import json

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (see `make vllm-env`)")

from paft_rl.eval import EvalSettings, evaluate  # noqa: E402
from tests.tiny import make_tiny_tokenizer  # noqa: E402

POOL = [
    {"id": "plain", "text": "{question}\n{options}\nAnswer:", "split": "heldout"},
    {"id": "letters", "text": "Q: {question} A) {A} B) {B} C) {C} D) {D}. Reply with a letter.", "split": "heldout"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("vllm") / "tiny-llama-head64"
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_vllm_backend_matches_hf(tmp_path, model_dir):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(t) + "\n" for t in POOL))
    common = dict(task="synth_mc", models=[str(model_dir)], templates=str(pool), limit=6, max_new_tokens=5,
                  progress=False)
    hf_results, hf_records = evaluate(EvalSettings(out=str(tmp_path / "hf"), backend="hf", **common))
    results, records = evaluate(EvalSettings(out=str(tmp_path / "vllm"), backend="vllm", **common))
    metrics = results["models"][str(model_dir)]
    assert len(records) == 12 and metrics["generated_this_run"] == 12
    assert set(metrics["per_template"]) == {"plain", "letters"}
    assert 1 <= metrics["mean_tokens"] <= 5
    # Same greedy decoding of the same float32 model: the texts agree but for rare near-ties.
    same = sum(a["output"] == b["output"] for a, b in zip(records, hf_records))
    assert same >= 10, [(a["output"], b["output"]) for a, b in zip(records, hf_records)]
    # Resume works for this backend too.
    again, _ = evaluate(EvalSettings(out=str(tmp_path / "vllm"), backend="vllm", **common))
    assert again["models"][str(model_dir)]["generated_this_run"] == 0
