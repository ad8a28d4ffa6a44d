"""Registry round-trip, TRL call shape, and property tests: no input makes any reward raise, and one item
never costs much more than the math timeout."""

import inspect
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import math as rmath

NAMES = [
    "math_accuracy", "mc_accuracy", "qa_exact_match", "qa_f1", "tool_call_accuracy", "tool_call_format",
    "tool_call_name", "tool_call_arguments", "think_answer_format", "answer_cue", "length_penalty", "template_format",
]
FORMAT_REWARDS = {"think_answer_format", "answer_cue", "length_penalty"}


@pytest.mark.parametrize("name", NAMES)
def test_registry_round_trips(name):
    fn = rewards.get_reward(name)
    assert rewards.REWARDS[name] is fn and fn.__name__ == name
    assert "completions" in inspect.signature(fn).parameters


def test_registry_has_exactly_the_contract_names():
    assert sorted(rewards.REWARDS) == sorted(NAMES)


def test_unknown_reward_lists_known_names():
    with pytest.raises(ValueError, match="math_accuracy"):
        rewards.get_reward("nope")


def test_resolve_rewards():
    funcs, weights = rewards.resolve_rewards(["math_accuracy", "answer_cue"], [1, 0.5])
    assert funcs == [rewards.math_accuracy, rewards.answer_cue] and weights == [1.0, 0.5]
    assert rewards.resolve_rewards(["qa_f1"])[1] == [1.0]
    for names, weights in ((["qa_f1"], [1.0, 2.0]), ([], None), (["bogus"], None), (["qa_f1"], ["x"])):
        with pytest.raises(ValueError):
            rewards.resolve_rewards(names, weights)


GOLDS = {
    "math_accuracy": "#### 4",
    "mc_accuracy": "B",
    "qa_exact_match": "Paris",
    "qa_f1": "Paris",
    "tool_call_accuracy": '[{"f": {"a": [1]}}]',
    "tool_call_format": '[{"f": {"a": [1]}}]',
    "tool_call_name": '[{"f": {"a": [1]}}]',
    "tool_call_arguments": '[{"f": {"a": [1]}}]',
}


class _State:
    global_step = 3


@pytest.mark.parametrize("name", NAMES)
def test_accepts_what_trl_passes(name):
    """TRL 1.16 `_calculate_rewards` passes these keywords plus every dataset column."""
    completions = [[{"role": "assistant", "content": "The answer is 4"}], [{"role": "assistant", "content": ""}]]
    out = rewards.REWARDS[name](
        prompts=[[{"role": "user", "content": "q"}]] * 2,
        completions=completions,
        completion_ids=[[1, 2], []],
        gold=[GOLDS.get(name, "x")] * 2,
        options=[["A", "B"], ["A", "B"]],
        row_id=[0, 1],
        answer_format=["answer_is", "answer_is"],  # the PAFT GRPO trainer's column: each completion's template format
        trainer_state=_State(),
        log_extra=lambda column, values: None,
        log_metric=lambda key, value: None,
    )
    cued = {"math_accuracy", "answer_cue", "template_format"}  # "The answer is 4" is right / follows answer_is
    expected = [1.0, 0.0] if name in cued else [0.0, 0.0]
    assert out == expected and all(isinstance(v, float) for v in out)


# ------------------------------------------------------------------------------------------------------------
# Property tests
# ------------------------------------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["\\boxed{", "\\boxed{9^9^9^9}", "<tool_call>", "#### ", "The answer is", "{\"name\": ", "f(a=", "[[[", "}}}}"]
)
_cell = st.none() | st.integers() | st.floats() | _text | st.lists(_text, max_size=3) | st.dictionaries(
    _text, _text, max_size=2
)
_completion = _cell | st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": _cell}), max_size=2)
_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(name=st.sampled_from(NAMES), completion=_completion, gold=_cell, options=_cell)
def test_no_input_raises(name, completion, gold, options):
    reward = rewards.REWARDS[name]
    out = reward(prompts=None, completions=[completion], gold=[gold], options=[options])
    # None says "this row cannot be scored": it follows from the gold (and options), never from the completion.
    unscorable = reward(prompts=None, completions=["The answer is 4"], gold=[gold], options=[options]) == [None]
    if name in FORMAT_REWARDS:
        assert not unscorable  # they need no gold
    assert len(out) == 1
    assert out[0] is None if unscorable else isinstance(out[0], float)


# The counter a reward bumps for a completion it cannot read (the tool rewards share one).
UNPARSED_COUNTER = {name: "tool_call_accuracy" for name in NAMES if name.startswith("tool_call")}


@_SETTINGS
@given(name=st.sampled_from(NAMES), completion=_completion, gold=_cell, options=st.none() | st.lists(_text, max_size=4),
       answer_format=st.sampled_from([None, "boxed", "option_letter", "option_text", "regex:\\d"]))
def test_extract_reads_none_exactly_where_the_reward_reads_no_answer(name, completion, gold, options, answer_format):
    """Every registered reward has an extractor that never raises and gives `None` exactly for the completions
    the reward itself scores as unparsed (before: eval knew the extractors of three rewards by name)."""
    reward = rewards.REWARDS[name]
    row = {"gold": gold, "options": options, "answer_format": answer_format}
    rewards.reset_parse_failures()
    (score,) = reward(prompts=None, completions=[completion], **{key: [value] for key, value in row.items()})
    unparsed = rewards.parse_failures().get(UNPARSED_COUNTER.get(name, name), 0) > 0
    answer = rewards.get_extractor(reward)(completion, **row)
    if score is not None:
        assert (answer is None) == unparsed


@_SETTINGS
@given(completion=_text, gold=_text)
def test_helpers_never_raise(completion, gold):
    rewards.extract_answer(completion)
    rewards.score_math(completion, gold)
    rewards.extract_choice(completion, [gold, "x"])
    rewards.score_choice(completion, gold, [gold, "x"])
    rewards.parse_tool_calls(completion)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    expr=st.sampled_from(
        [
            "9^{9^{9^{9}}}",
            "9^9^9^9",
            "\\frac{1}{" * 300 + "1" + "}" * 300,
            "+".join(f"\\sqrt{{x^{{{i}}}+{i}}}" for i in range(2000)),
            "(" * 500 + "1" + ")" * 500,
            "x" * 50_000,
        ]
    ),
    gold=st.sampled_from(["5", "\\frac{1}{x}", "x^2", "\\sqrt{2}"]),
)
def test_time_per_item_bounded_by_timeout(expr, gold):
    with rmath.get_math_accuracy_reward(timeout=2) as reward:
        start = time.monotonic()
        assert reward(None, ["\\boxed{" + expr + "}"], [gold]) in ([0.0], [1.0])
        # Timeout plus a generous margin: a replacement worker may start and the machine is shared.
        assert time.monotonic() - start < 2 + 8


def test_reward_by_dotted_path(tmp_path, monkeypatch):
    """As `trl grpo --reward_funcs my_module.fn` accepts: a user's own reward next to the registry's."""
    (tmp_path / "my_rewards.py").write_text("def brevity(prompts, completions, **kw):\n"
                                            "    return [1.0 / (1 + len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    funcs, weights = rewards.resolve_rewards(["math_accuracy", "my_rewards.brevity"], [1.0, 0.5])
    assert funcs[0] is rewards.math_accuracy and funcs[1].__name__ == "brevity"
    assert funcs[1](None, ["abc"]) == [0.25] and weights == [1.0, 0.5]
    with pytest.raises(ValueError, match="has no function 'missing'"):
        rewards.get_reward("my_rewards.missing")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        rewards.get_reward("no_such_module.fn")


def test_math_reward_owns_its_pool():
    """Each reward built by the factory has its own settings and workers, and `close` stops them."""
    import os

    first = rewards.get_math_accuracy_reward(workers=1, timeout=3)
    second = rewards.get_math_accuracy_reward(workers=2)
    assert (first.workers, first.timeout, first.__name__) == (1, 3.0, "math_accuracy")
    assert first(None, ["\\boxed{2\\sqrt{2}}"], ["\\sqrt{8}"]) == [1.0]
    assert second(None, ["\\boxed{2\\sqrt{2}}"], ["\\sqrt{8}"]) == [1.0]
    pids = first.pool().pids()
    assert len(pids) == 1 and first.pool() is not second.pool()
    first.close()
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []  # killed and reaped: not even a zombie
    assert len(second.pool().pids()) == 2
    second.close()
    assert first(None, ["\\boxed{2\\sqrt{2}}"], ["\\sqrt{8}"]) == [1.0]  # a closed reward starts a new pool
    first.close()
