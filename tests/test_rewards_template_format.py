"""Per-template answer formats: the pool field ``answer_format`` (validated, saved and read back) and the
``template_format`` reward that scores whether a completion follows the format its own template asked for."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from prompt_pool import PoolValidationError, PromptPool, Template, load_pool, read_pool, write_pool
from prompt_pool.pool import ANSWER_FORMATS
from rewards.format import FORMAT_CHECKS, score_template_format

OPTIONS = ["London", "Paris", "Rome", "New York City"]

# (answer format, completion, expected score)
CASES = [
    ("boxed", "So the total is \\boxed{42}.", 1.0),
    ("boxed", "\\boxed {\\frac{1}{2}}", 1.0),
    ("boxed", "The answer is 42.", 0.0),
    ("boxed", "\\boxed{}", 0.0),
    ("boxed", "\\boxed{ }", 0.0),
    ("boxed", "boxed{4}", 0.0),
    ("answer_is", "3 + 4 = 7. The answer is 7.", 1.0),
    ("answer_is", "the final answer is: 12", 1.0),
    ("answer_is", "THE ANSWER IS **9**", 1.0),
    ("answer_is", "The answer is\n7", 1.0),
    ("answer_is", "The answer is.", 0.0),
    ("answer_is", "Answer: 7", 0.0),
    ("answer_is", "#### 7", 0.0),
    ("answer_tags", "<answer>7</answer>", 1.0),
    ("answer_tags", "<think>r</think> <ANSWER> B </ANSWER>", 1.0),
    ("answer_tags", "<answer></answer> <answer> x </answer>", 1.0),
    ("answer_tags", "<answer> </answer>", 0.0),
    ("answer_tags", "<answer>7", 0.0),
    ("answer_tags", "answer: 7", 0.0),
    ("hashes", "2 * 3 = 6\n#### 6", 1.0),
    ("hashes", "####18", 1.0),
    ("hashes", "#### ", 0.0),
    ("hashes", "##### #", 0.0),
    ("hashes", "The answer is 6", 0.0),
    ("last_line", "Two apples and three more.\n5", 1.0),
    ("last_line", "Working: 2 + 3\nFinal answer: 5 apples", 1.0),
    ("last_line", "5\n\n", 1.0),
    ("last_line", "The answer is 5.", 1.0),
    ("last_line", "There are five apples left in the basket now.", 0.0),
    ("last_line", "5\nand then I kept counting the apples in the basket", 0.0),
    ("last_line", "Answer:", 0.0),
    ("last_line", "", 0.0),
    ("option_letter", "B", 1.0),
    ("option_letter", "(c)", 1.0),
    ("option_letter", "**D.**", 1.0),
    ("option_letter", "B. Paris", 1.0),
    ("option_letter", "Paris is the capital.\nThe answer is (B).", 1.0),
    ("option_letter", "Answer: A", 1.0),
    ("option_letter", "A dog is not a city.", 0.0),
    ("option_letter", "E", 0.0),  # four options: A to D
    ("option_letter", "Paris", 0.0),
    ("option_text", "Paris", 1.0),
    ("option_text", "paris.", 1.0),
    ("option_text", "The answer is New York City", 1.0),
    ("option_text", "B. Paris", 1.0),
    ("option_text", "Answer: Rome!", 1.0),
    ("option_text", "B", 0.0),
    ("option_text", "Berlin", 0.0),
    ("option_text", "I would say Paris or Rome", 0.0),
    ("regex:^Result: \\d+$", "Result: 12", 1.0),
    ("regex:^Result: \\d+$", "Result: twelve", 0.0),
    ("regex:(?i)final answer:\\s*\\d", "...\nFINAL ANSWER: 3", 1.0),
    ("regex:<tool_call>[\\s\\S]*?</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", 1.0),
    ("regex:<tool_call>[\\s\\S]*?</tool_call>", "f(x=1)", 0.0),
]


@pytest.mark.parametrize("answer_format,completion,expected", CASES)
def test_each_format_is_scored(answer_format, completion, expected):
    out = rewards.template_format(["p"], [completion], ["gold"], answer_format=[answer_format], options=[OPTIONS])
    assert out == [expected]
    chat = [{"role": "assistant", "content": completion}]  # conversational completions score the same
    assert rewards.template_format(["p"], [chat], answer_format=[answer_format], options=[OPTIONS]) == [expected]


def test_every_named_format_is_covered():
    assert set(FORMAT_CHECKS) == set(ANSWER_FORMATS)  # the pool accepts exactly what the reward checks
    assert {fmt for fmt, _, _ in CASES if not fmt.startswith("regex:")} == set(ANSWER_FORMATS)
    for fmt in ANSWER_FORMATS:  # each format has a completion it accepts and one it refuses
        assert {score for f, _, score in CASES if f == fmt} == {0.0, 1.0}, fmt


def test_each_completion_is_scored_by_its_own_templates_format():
    completions = ["The answer is 7", "The answer is 7", "#### 7", "7"]
    formats = ["answer_is", "hashes", "hashes", None]
    assert rewards.template_format(None, completions, answer_format=formats) == [1.0, 0.0, 1.0, None]


def test_not_applicable_without_a_declared_format_or_options():
    assert rewards.template_format(None, ["The answer is 7"] * 2) == [None, None]  # no column at all
    assert score_template_format("Paris", "option_text", None) is None  # nothing to compare with
    assert score_template_format("x", "no_such_format") is None
    assert score_template_format("x", "regex:(") is None  # validation refuses it; the reward never raises


# ---------------------------------------------------------------------------- no input raises
_text = st.text(max_size=200) | st.sampled_from(
    ["\\boxed{", "<answer>", "</answer>", "#### ", "The answer is", "(B)", "\n\n", "Answer:", "<" * 50])
_format = st.sampled_from([*ANSWER_FORMATS, "regex:\\d+", "regex:(?m)^A$", "regex:(", "bogus", ""]) | st.none() | \
    st.integers()
_options = st.none() | st.text(max_size=5) | st.lists(st.none() | st.integers() | _text, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(completion=_text | st.none() | st.lists(st.fixed_dictionaries({"role": st.just("assistant"),
                                                                     "content": _text | st.none()})),
       answer_format=_format, options=_options)
def test_no_input_raises(completion, answer_format, options):
    out = rewards.template_format(None, [completion], answer_format=[answer_format], options=[options])
    assert len(out) == 1 and out[0] in (None, 0.0, 1.0)
    if not isinstance(answer_format, str) or answer_format in ("bogus", "", "regex:("):
        assert out == [None]


def test_long_inputs_stay_fast():
    import time

    start = time.monotonic()
    for fmt in ANSWER_FORMATS:
        for blob in ("<answer>" * 25_000, " " * 200_000 + "x", "the " * 50_000, "#" * 200_000, "\n" * 200_000):
            score_template_format(blob, fmt, OPTIONS)
    assert time.monotonic() - start < 10


# ---------------------------------------------------------------------------- the pool field
def test_declared_formats_are_validated():
    pool = PromptPool([Template("a", "{question} Box it.", answer_format="boxed"),
                       Template("b", "{question} End with #### N.", answer_format="hashes"),
                       Template("c", "{question}", answer_format="regex:^\\d+$"),
                       Template("d", "Q: {question}")])
    assert pool.problems() == []
    bad = PromptPool([Template("a", "{question}", answer_format="boxxed"),
                      Template("b", "{question} 2", answer_format="regex:("),
                      Template("c", "{question} 3", answer_format="regex:"),
                      Template("d", "{question} 4", answer_format=7)])
    problems = bad.problems()
    assert len(problems) == 4
    assert problems[0].startswith("template 'a': unknown answer_format 'boxxed': use one of boxed, answer_is")
    assert "regex:(" in problems[1] and "not a valid regular expression" in problems[1]
    assert "has no pattern" in problems[2] and "must be text, got int" in problems[3]
    with pytest.raises(PoolValidationError, match="boxxed"):
        bad.validate()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".yaml", ".csv", ".xlsx"])
def test_answer_format_survives_every_pool_file(tmp_path, suffix):
    pool = PromptPool([Template("a", "{question} Box it.", answer_format="boxed"),
                       Template("b", "{question}", split="heldout"),
                       Template("c", "Q: {question}", answer_format="regex:^A: \\d+")])
    again = read_pool(write_pool(pool, tmp_path / f"pool{suffix}"))
    assert [(t.id, t.answer_format) for t in again] == [("a", "boxed"), ("b", None), ("c", "regex:^A: \\d+")]
    assert Template("b", "x").to_dict() == {"id": "b", "text": "x", "split": "train"}  # absent, not null


def test_builtin_pools_declare_the_formats_their_texts_ask_for():
    arith = {t.id: t.answer_format for t in load_pool("synth_arith")}
    assert arith["synth_arith-train-01"] == "answer_is" and arith["synth_arith-train-04"] == "hashes"
    assert arith["synth_arith-train-17"] == "boxed" and arith["synth_arith-train-07"] is None
    assert load_pool("synth_mc").get("synth_mc-train-01").answer_format == "option_text"
    assert load_pool("arc").get("arc-train-01").answer_format == "option_letter"
    for name in ("synth_arith", "gsm8k", "math", "synth_mc", "arc"):
        assert len({t.answer_format for t in load_pool(name).train} - {None}) >= 1, name
