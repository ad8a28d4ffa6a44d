"""Table-driven tests of the pieces of `pool generate`: parser, filters, split, diversity, meta-prompts, config."""

import pytest

from paft_rl.construction import config_from_dict, parse_templates
from paft_rl.construction.config import FilterConfig, SplitConfig, TaskSpec
from paft_rl.construction.filters import (
    answer_cue_problem,
    apply_filters,
    exact_duplicates,
    jaccard,
    length_problem,
    near_duplicates,
    ngrams,
    normalised,
    placeholder_problem,
)
from paft_rl.construction.prompts import build_requests
from paft_rl.construction.split import diversity, seed_pool_templates, split_pool
from prompt_pool import Template, UserError

MC = TaskSpec(name="mc", description="Pick the right option.", fields=("question", "A", "B", "C", "D", "options"),
              required_fields=("question",), option_sets=(("A", "B", "C", "D"), ("options",)), answer_cue="Answer:")
QA = TaskSpec(name="qa", description="Answer from the context.", fields=("question", "context"),
              required_fields=("question", "context"), answer_cue="")


# ---------------------------------------------------------------------------- parser
@pytest.mark.parametrize("reply, expected", [
    ("<template>Q: {question}\nAnswer:</template>", ["Q: {question}\nAnswer:"]),
    ("Sure!\n<TEMPLATE>\n  A {question}\n</TEMPLATE> and\n<template>B {question}</template>\nBye",
     ["A {question}", "B {question}"]),
    ("<think>I could write <template>{question}</template></think><template>kept {question}</template>",
     ["kept {question}"]),
    ("1. First: {question}\n2) Second {question}\nAnswer:\n3. Third {question}",
     ["First: {question}", "Second {question}\nAnswer:", "Third {question}"]),
    ("**Template 1:** Solve {question}\n\n**Template 2:**\nQ: {question}\n\nA:",
     ["Solve {question}", "Q: {question}\n\nA:"]),
    ("Here they are:\n```\nQuestion: {question}\nAnswer:\n```\n```text\nSolve: {question}\n```\nDone",
     ["Question: {question}\nAnswer:", "Solve: {question}"]),
    ('```json\n["x {question}", {"template": "y {question}"}, 3]\n```', ["x {question}", "y {question}"]),
    ("Intro text.\n\nTell me {question}\n\nThanks!", ["Tell me {question}"]),
    ('"Quoted {question}"', ["Quoted {question}"]),
    ("<template>Doubled {{question}} and {{literal}}</template>", ["Doubled {question} and {{literal}}"]),
    ("No templates here, sorry.", []),
    ("<template>   </template>", []),
    ("<template>unclosed {question}", ["unclosed {question}"]),
])
def test_parser(reply, expected):
    assert parse_templates(reply, fields=["question"]) == expected


# ---------------------------------------------------------------------------- per-template filters
@pytest.mark.parametrize("text, task, problem", [
    ("{question}\n{options}\nAnswer:", MC, None),
    ("{question} {A} {B} {C} {D}", MC, None),
    ("{question} {A} {B}", MC, "does not show the answer options"),
    ("{options} Answer:", MC, "does not use required field {question}"),
    ("{question} {options} {answer}", MC, "uses unknown field {answer}"),
    ("{question} {options} {{answer}}", MC, None),  # literal braces are fine
    ("{context}\n{question}", QA, None),
    ("{question}", QA, "does not use required field {context}"),
    ("", QA, "is empty"),
])
def test_placeholder_filter(text, task, problem):
    found = placeholder_problem(text, task)
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("text, cue, ok", [
    ("Q: {question}\nAnswer:", "Answer:", True),
    ("Q: {question}\nanswer: ", "Answer:", True),  # case-insensitive
    ("Q: {question}\nYour reply:", "Answer:", False),
    ("Put it in \\boxed{}. {question}", "\\boxed", True),
    ("{question}", "", True),  # tasks without a cue are not checked
])
def test_answer_cue_filter(text, cue, ok):
    assert (answer_cue_problem(text, cue) is None) is ok


@pytest.mark.parametrize("text, low, high, problem", [
    ("{question}", 5, 100, "only 0 characters"),
    ("Hi {question} {options}", 5, 100, "only 2 characters"),
    ("Please answer: {question}", 5, 100, None),
    ("x" * 50 + " {question}", 5, 40, "characters (max 40)"),
])
def test_length_filter(text, low, high, problem):
    found = length_problem(text, low, high)
    assert (found is None) if problem is None else (problem in found)


# ---------------------------------------------------------------------------- duplicates
@pytest.mark.parametrize("a, b, same", [
    ("Q: {question}\nAnswer:", "q:   {question} answer", True),
    ("Q: {question}", "Q: {question}!!", True),
    ("Q: {question}", "Q: {options}", False),
    ("Answer {question}", "Answer the {question}", False),
])
def test_normalised_text(a, b, same):
    assert (normalised(a) == normalised(b)) is same


@pytest.mark.parametrize("texts, reference, dropped", [
    (["A {question}", "a  {question}.", "B {question}"], [], {1}),
    (["A {question}", "B {question}"], ["b {question}"], {1}),
    (["A {question}", "A {question}", "A {question}"], [], {1, 2}),
    ([], [], set()),
])
def test_exact_duplicates(texts, reference, dropped):
    assert set(exact_duplicates(texts, reference)) == dropped


BASE = "Read the question below carefully and then pick the best option {question} {options} Answer:"


@pytest.mark.parametrize("texts, threshold, dropped", [
    ([BASE, BASE.replace("carefully", "slowly")], 0.5, {1}),      # one word changed: Jaccard 0.67
    ([BASE, BASE.replace("carefully", "slowly")], 0.7, set()),    # ... but not above 0.7
    ([BASE, "Quiz time! {question} Options: {options} Answer:"], 0.3, set()),
    ([BASE, BASE, BASE + " Thanks"], 0.99, {1}),                  # a sentence more keeps it at 0.93
    ([BASE, BASE], 1.0, set()),                                   # 1.0 turns the test off
])
def test_near_duplicates(texts, threshold, dropped):
    assert set(near_duplicates(texts, 3, threshold)) == dropped


@pytest.mark.parametrize("a, b, n, value", [
    ("a b c d", "a b c d", 3, 1.0),
    ("a b c d", "a b c e", 3, 1 / 3),
    ("a b", "a b", 3, 1.0),       # shorter than n: the whole text is one gram
    ("a b", "c d", 1, 0.0),
    ("", "", 2, 1.0),
])
def test_jaccard(a, b, n, value):
    assert jaccard(ngrams(a, n), ngrams(b, n)) == pytest.approx(value)


def test_filter_chain_counts_every_step():
    texts = ["Choose well: {question}\n{options}\nAnswer:",   # kept
             "{question} {options} Answer:",                    # too short
             "Choose well: {question}\n{options}\nAnswer",      # no colon: cue missing... and would be a duplicate
             "Pick: {question} {answer}\nAnswer:",              # unknown field
             "choose WELL {question} {options} answer:",        # exact duplicate of the first
             "Q: {question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:",   # copy of a seed
             "Here is a quiz for you, friend. {question}\nOptions:\n{options}\nAnswer:"]  # kept
    candidates = [Template(f"c{i}", t) for i, t in enumerate(texts)]
    seeds = ["Q: {question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"]
    kept, steps = apply_filters(candidates, MC, FilterConfig(min_chars=8), seeds)
    assert [t.id for t in kept] == ["c0", "c6"]
    assert [(s.name, s.before, s.dropped) for s in steps] == [
        ("placeholders", 7, 1), ("answer_cue", 6, 1), ("length", 5, 1), ("exact_duplicates", 4, 2),
        ("near_duplicates", 2, 0)]
    assert steps[3].examples[1] == ("c5", "same text as seed 0")


# ---------------------------------------------------------------------------- split and diversity
@pytest.mark.parametrize("n_generated, settings, expected", [
    (8, SplitConfig(heldout_fraction=0.25, seeds_to_heldout=True),
     {"heldout_seeds": 2, "heldout_generated": 2, "train": 6}),
    (8, SplitConfig(heldout_fraction=0.5, include_seeds=False),
     {"heldout_seeds": 0, "heldout_generated": 4, "train": 4}),
    (1, SplitConfig(heldout_fraction=0.5, seeds_to_heldout=True),
     {"heldout_seeds": 2, "heldout_generated": 0, "train": 1}),
    (8, SplitConfig(heldout_fraction=0.2), {"total_heldout": 2, "train": 8}),
])
def test_split(n_generated, settings, expected):
    generated = [Template(f"g{i}", f"Variant {i} {{question}}") for i in range(n_generated)]
    seeds = seed_pool_templates(["S1 {question}", "S2 {question}"])
    pool = split_pool(generated, seeds, settings)
    held = pool.heldout
    counts = {"heldout_seeds": sum(t.id.startswith("seed") for t in held),
              "heldout_generated": sum(t.id.startswith("g") for t in held), "train": len(pool.train),
              "total_heldout": len(held)}
    assert {k: counts[k] for k in expected} == expected
    assert split_pool(generated, seeds, settings).templates == pool.templates  # seeded, deterministic


@pytest.mark.parametrize("texts, key, value", [
    (["a b c", "a b c"], "mean_pairwise_similarity", 1.0),
    (["a b c", "d e f"], "mean_pairwise_similarity", 0.0),
    (["a a b b"], "distinct_1", 0.5),
    (["a b c", "a b d"], "distinct_2", 0.75),
    ([], "distinct_1", 0.0),
])
def test_diversity(texts, key, value):
    assert diversity(texts, n=3)[key] == pytest.approx(value)


# ---------------------------------------------------------------------------- config and meta-prompts
INLINE = {"name": "qa", "description": "Answer from the context.", "fields": ["question", "context"],
          "required_fields": ["question"], "answer_cue": "Answer:"}
GEN = {"name": "g", "model": "m", "base_url": "http://127.0.0.1:1/v1"}


@pytest.mark.parametrize("change, message", [
    ({"temprature": 0.5}, "config: unknown key 'temprature'; did you mean 'temperature'?"),
    ({"generators": [GEN, {**GEN, "name": "h", "modle": "m"}]},
     "config.generators[1]: unknown key 'modle'; did you mean 'model'?"),
    ({"generators": [{**GEN, "api_key_env": "PAFT_TEST_UNSET_KEY"}]},
     "config.generators[0]: generator 'g' reads its API key from $PAFT_TEST_UNSET_KEY, which is not set"),
    ({"generators": [{**GEN, "backend": "llamacpp"}]},
     "config.generators[0].backend must be one of openai, transformers, vllm, got 'llamacpp'"),
    ({"generators": [{"name": "g", "model": "m"}]}, "config.generators[0].base_url is needed with backend openai"),
    ({"generators": [{"name": "g"}]}, "config.generators[0]: set model"),
    ({"generators": [{**GEN, "threads": 1}]}, "config.generators[0].threads is read by backend transformers only, "
                                               "and this generator's backend is openai"),
    ({"generators": [{"name": "g", "model": "m", "backend": "vllm", "base_url": "http://127.0.0.1:1/v1"}]},
     "config.generators[0].base_url is read by backend openai only, and this generator's backend is vllm"),
    ({"generators": [{**GEN, "max_tokens": 0}]}, "config.generators[0].max_tokens must be a positive number, got 0"),
    ({"generators": [GEN, GEN]}, "config.generators must have unique names; repeated: g"),
    ({"generators": []}, "config.generators must list at least one generator"),
    ({"generators": GEN}, "config.generators must be a list"),
    ({"modes": ["few_shot"]}, "config: few_shot mode needs seed_templates"),
    ({"modes": ["one_shot"]}, "config.modes item 'one_shot': must be one of few_shot, zero_shot, got 'one_shot'"),
    ({"modes": []}, "config.modes must name at least one of few_shot, zero_shot"),
    ({"per_model_per_mode": 0}, "config.per_model_per_mode must be a positive number, got 0"),
    ({"per_model_per_mode": "four"}, "config.per_model_per_mode must be a whole number, got 'four'"),
    ({"top_p": 0}, "config.top_p must be in (0, 1], got 0"),
    ({"seed_templates": ["{question} {answer} Answer:"], "modes": ["few_shot"]},
     "config: seed_templates are not valid for task 'qa': template 'seed-0' uses unknown field {answer}"),
    ({"seed_templates": ["ok {question}", ""]}, "config.seed_templates[1] must be a non-empty string"),
    ({"seed_templates": {"pool": "synth_mc", "spilt": "train"}},
     "config.seed_templates: unknown key 'spilt'; did you mean 'split'?"),
    ({"split": {"heldout_fraction": 1.5}}, "config.split.heldout_fraction must be in (0, 1), got 1.5"),
    ({"requests": {"retries": -1}}, "config.requests.retries must be >= 0, got -1"),
    ({"requests": {"concurrency": 0}}, "config.requests.concurrency must be a positive number, got 0"),
    ({"screen": {"enabled": True}}, "config.screen.model is needed when the screen is enabled"),
    ({"screen": {"dev_size": 0}}, "config.screen.dev_size must be a positive number, got 0"),
    ({"task": "no_such_task"}, "unknown task 'no_such_task'"),
    ({"task": {"name": "x", "description": "d", "fields": ["q"], "required_fields": ["z"]}},
     "config.task.fields must list every field named in required_fields and option_sets; missing ['z']"),
    ({"task": {"name": "x", "description": "d", "feilds": ["q"]}},
     "config.task: unknown key 'feilds'; did you mean 'fields'?"),
    ({"task": {"name": "x", "fields": ["q"]}}, "config.task: set description"),
    ({"metaprompts": {"sytem": "s.txt"}}, "config.metaprompts: unknown key 'sytem'; did you mean 'system'?"),
    ({"filters": {"min_char": 3}}, "config.filters: unknown key 'min_char'; did you mean 'min_chars'?"),
    ({"filters": {"near_duplicate_threshold": 2}}, "config.filters.near_duplicate_threshold must be in [0, 1], got 2"),
    ({"registry_task": "synth_mc"}, "config: unknown key 'registry_task'"),
])
def test_config_errors_name_the_key(change, message, monkeypatch):
    monkeypatch.delenv("PAFT_TEST_UNSET_KEY", raising=False)
    data = {"task": INLINE, "generators": [GEN], "modes": ["zero_shot"], **change}
    with pytest.raises(UserError) as error:
        config_from_dict(data)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_registry_task_and_dual_prompts():
    config = config_from_dict({"task": "synth_mc", "generators": [GEN], "per_model_per_mode": 4,
                               "templates_per_request": 3, "few_shot_examples": 2,
                               "seed_templates": ["Q: {question}\n{options}\nAnswer:",
                                                  "{question} {A} {B} {C} {D} Answer:",
                                                  "Pick: {question}\n{options}\nAnswer:"]})
    assert config.task.answer_cue == "Answer:" and "options" in config.task.fields
    requests = build_requests(config)
    assert [(r.mode, r.sample) for r in requests] == [("few_shot", 0), ("few_shot", 1),
                                                      ("zero_shot", 0), ("zero_shot", 1)]
    few, zero = requests[0].messages[1]["content"], requests[2].messages[1]["content"]
    assert "Write 3 new templates" in few and few.count("<template>\n") == 2  # two seed examples shown
    assert "{question}: must appear" in zero and "{options}" in zero and '"Answer:"' in zero
    assert "Pick the one option of four" in zero and "<template>\nQ:" not in zero
    assert len({r.key for r in requests}) == 4
    assert build_requests(config)[0].key == requests[0].key  # stable across calls


@pytest.mark.parametrize("seeds, count", [
    ({"pool": "synth_mc", "split": "heldout"}, "heldout"),
    ("synth_mc", "all"),
    ({"pool": "pool.jsonl"}, 2),
])
def test_seed_templates_from_a_pool(seeds, count, tmp_path):
    from prompt_pool import load_pool

    (tmp_path / "pool.jsonl").write_text('{"text": "Q {question} {options} Answer:"}\n'
                                         '{"text": "{question} {options}"}\n')
    config = config_from_dict({"task": "synth_mc", "generators": [GEN], "seed_templates": seeds}, base_dir=tmp_path)
    expected = count if isinstance(count, int) else len(load_pool("synth_mc").subset(count).templates)
    assert len(config.seed_templates) == expected > 0


@pytest.mark.parametrize("name, task, generators, seeds", [
    ("gsm8k_hosted_ensemble.yaml", "gsm8k", 6, "gsm8k"),
    ("synth_mc_smollm2.yaml", "synth_mc", 1, 6),
])
def test_shipped_pool_configs_load(name, task, generators, seeds, monkeypatch):
    from pathlib import Path

    from paft_rl.construction import load_config
    from prompt_pool import load_pool

    for key in ("OPENAI_API_KEY", "TOGETHER_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.setenv(key, "sk-test")
    config = load_config(Path(__file__).parent.parent / "launch" / "pools" / name)
    assert (config.task.name, config.registry_task, len(config.generators)) == (task, task, generators)
    expected = seeds if isinstance(seeds, int) else len(load_pool(seeds).train)
    assert len(config.seed_templates) == expected and config.modes == ["few_shot", "zero_shot"]


def test_one_mode_may_be_written_without_a_list():
    config = config_from_dict({"task": INLINE, "generators": [GEN], "modes": "zero_shot"})
    assert config.modes == ["zero_shot"] and [r.mode for r in build_requests(config)] == ["zero_shot"] * 4
