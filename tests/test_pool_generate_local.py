"""`pool generate` with local generators: a real tiny transformers model end to end, and a missing vLLM.

The tiny model is random at first, so the test first teaches it (a few dozen optimiser steps on one
sequence) to answer the zero-shot meta-prompt with a template; generation, decoding, parsing, filtering,
caching and provenance are then the real code paths, with real sampling.
"""

import importlib.util
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paft_rl.construction import ResponseCache, build_requests, config_from_dict, generate_pool
from paft_rl.construction.collect import collect_responses
from paft_rl.construction.screen import screen_templates
from prompt_pool import Template, UserError, read_pool
from tests.tiny import make_tiny_model_dir


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine run many times faster on one thread than on two competing ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TASK = {"name": "quiz", "description": "Answer a quiz question.", "fields": ["question"],
        "required_fields": ["question"], "answer_cue": "Answer:"}
TAUGHT = "<template>\nQuiz time! Here is the question: {question}\nAnswer:\n</template>"


def short_metaprompts(folder):
    """Short meta-prompts keep the taught sequence (and so the test) small; the shipped ones are longer."""
    (folder / "zero_shot.txt").write_text("Write $count template for: $description\n$placeholder_rules\n$cue_rule")
    (folder / "system.txt").write_text("")
    return {"zero_shot": str(folder / "zero_shot.txt"), "system": str(folder / "system.txt")}


def local_config(model_dir, tmp_path, **overrides):
    data = {"task": TASK, "modes": ["zero_shot"], "metaprompts": short_metaprompts(tmp_path), "per_model_per_mode": 2,
            "templates_per_request": 1, "temperature": 0.7, "cache": str(tmp_path / "cache.jsonl"),
            "filters": {"min_chars": 10},
            "generators": [{"name": "tiny", "backend": "transformers", "model": str(model_dir), "dtype": "float32",
                            "batch_size": 2, "max_tokens": 40}]}
    data.update(overrides)
    return config_from_dict(data)


def teach(model_dir, prompt: str, answer: str, max_steps: int = 400) -> float:
    """Overfit the tiny model on one (prompt, answer) pair, loss on the answer only, until the answer is
    near-certain; save it in place and return the final loss."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(max_steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        if loss.item() < 0.005:
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)
    return loss.item()


@pytest.fixture(scope="module")
def taught_model_dir(tmp_path_factory):
    folder = make_tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    config = local_config(folder, tmp_path_factory.mktemp("metaprompts"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = list(build_requests(config)[0].messages)
    loss = teach(folder, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), TAUGHT)
    assert loss < 0.005, f"the tiny model did not learn its answer (loss {loss:.3f})"
    return folder


@pytest.mark.slow
def test_transformers_generator_builds_a_pool(taught_model_dir, tmp_path):
    config = local_config(taught_model_dir, tmp_path)
    result = generate_pool(config, tmp_path / "pool.jsonl", log=lambda line: None)
    assert result.report["requests"] == {"requests": 2, "cached": 0, "received": 2, "failed": 0, "retries": 0}
    pool = read_pool(tmp_path / "pool.jsonl")
    assert "Quiz time! Here is the question: {question}\nAnswer:" in [t.text for t in pool.templates]
    template = pool.templates[0]
    assert template.source["backend"] == "transformers" and template.source["model"] == str(taught_model_dir)
    assert template.source["mode"] == "zero_shot" and template.source["temperature"] == 0.7
    # Two samples went in; each was either kept or dropped by exactly one counted filter step.
    steps = result.report["filters"]
    assert steps[0]["in"] == 2 and len(pool) + sum(s["dropped"] for s in steps) == 2


@pytest.mark.slow
def test_transformers_responses_are_cached(taught_model_dir, tmp_path):
    model_dir = shutil.copytree(taught_model_dir, tmp_path / "model")
    config = local_config(model_dir, tmp_path, per_model_per_mode=3, temperature=1.0)
    first = collect_responses(config, build_requests(config), ResponseCache(tmp_path / "cache.jsonl"))
    assert first.outcomes["tiny"].received == 3 and all(isinstance(r["text"], str) for r in first.responses)
    # With the model gone, the same config is served from the cache file alone (loading would fail).
    shutil.rmtree(model_dir)
    again = collect_responses(config, build_requests(config), ResponseCache(tmp_path / "cache.jsonl"))
    assert again.outcomes["tiny"].cached == 3 and again.outcomes["tiny"].fatal is None
    assert again.responses == first.responses


def test_missing_model_fails_that_generator_only(tmp_path):
    config = local_config(tmp_path / "no-such-model", tmp_path)
    requests = build_requests(config)
    collection = collect_responses(config, requests, ResponseCache(None))
    outcome = collection.outcomes["tiny"]
    assert outcome.fatal and "cannot load model" in outcome.fatal and outcome.failed == 2
    assert collection.responses == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed: this checks its absence")
def test_vllm_backend_without_vllm_says_how_to_install(tmp_path):
    config = local_config("some-model", tmp_path)
    config.generators[0].backend = "vllm"
    collection = collect_responses(config, build_requests(config), ResponseCache(None))
    assert "pip install 'paft-rl[vllm]'" in collection.outcomes["tiny"].fatal


@pytest.mark.slow
def test_accuracy_screen_runs_eval_with_a_reference_model(tmp_path):
    model = make_tiny_model_dir(tmp_path)
    templates = [Template("plain", "{question}\n{options}\nAnswer:"),
                 Template("letters", "Q: {question}\nA) {A}\nB) {B}\nC) {C}\nD) {D}\nAnswer:")]

    def screened(min_accuracy):
        config = config_from_dict({"task": "synth_mc", "modes": ["zero_shot"],
                                   "generators": [{"name": "g", "backend": "transformers", "model": str(model)}],
                                   "screen": {"enabled": True, "model": str(model), "dev_size": 3,
                                              "min_accuracy": min_accuracy}})
        return screen_templates(templates, config, tmp_path / "screen")

    kept, step = screened(0.0)
    assert [t.id for t in kept] == ["plain", "letters"] and step.to_dict()["dropped"] == 0
    assert all(0.0 <= t.source["screen_accuracy"] <= 1.0 for t in kept)
    kept, step = screened(1.01)  # nothing reaches it; the eval resume log in tmp_path/screen is reused
    assert kept == [] and (step.name, step.before, step.dropped) == ("accuracy_screen", 2, 2)
    assert "dev accuracy" in step.examples[0][1]


def test_screen_needs_a_registry_task(tmp_path):
    with pytest.raises(UserError, match="screen needs a registry task"):
        local_config(tmp_path, tmp_path, screen={"enabled": True, "model": "m"})
