"""Table-driven tests for the QA rewards: multiple choice, exact match and token F1."""

import pytest

import rewards
from rewards import qa

OPTS = ["Paris", "London", "hot dog", "dog"]

# (completion, gold letter, options, expected score)
MC_CASES = [
    ("B", "B", OPTS, 1.0),
    ("(B)", "B", OPTS, 1.0),
    ("B.", "B", OPTS, 1.0),
    ("B)", "B", OPTS, 1.0),
    ("Answer: B", "B", OPTS, 1.0),
    ("answer: b", "B", OPTS, 1.0),
    ("The answer is B", "B", OPTS, 1.0),
    ("The answer is (B).", "B", OPTS, 1.0),
    ("The correct answer is B.", "B", OPTS, 1.0),
    ("The correct option is B) London", "B", OPTS, 1.0),
    ("**B**", "B", OPTS, 1.0),
    ("**Answer:** B", "B", OPTS, 1.0),
    ("b", "B", OPTS, 1.0),
    ("The answer is b.", "B", OPTS, 1.0),
    ("London", "B", OPTS, 1.0),
    ("london.", "B", OPTS, 1.0),
    ("The answer is London.", "B", OPTS, 1.0),
    ("B. London", "B", OPTS, 1.0),
    ("Let me think.\nLondon is in England.\nThe answer is B.", "B", OPTS, 1.0),
    ("<think>hmm, A or B</think><answer>B</answer>", "B", OPTS, 1.0),
    ("hot dog", "C", OPTS, 1.0),
    ("The answer is a dog", "D", OPTS, 1.0),
    ("I think it is hot dog", "C", OPTS, 1.0),
    ("Answer: (C) hot dog", "C", OPTS, 1.0),
    ("D", "d", OPTS, 1.0),
    ("(b)", "(B)", OPTS, 1.0),
    ("E", "E", None, 1.0),
    ([{"role": "assistant", "content": "The answer is B."}], "B", OPTS, 1.0),
    ("A", "B", OPTS, 0.0),
    ("The answer is A.", "B", OPTS, 0.0),
    ("Paris", "B", OPTS, 0.0),
    ("A or B", "B", OPTS, 0.0),
    ("A and B", "B", OPTS, 0.0),
    ("The answer is A and C", "A", OPTS, 0.0),
    ("B, C", "B", OPTS, 0.0),
    ("E", "B", OPTS, 0.0),
    ("", "B", OPTS, 0.0),
    ("I am not sure.", "B", OPTS, 0.0),
    (None, "B", OPTS, 0.0),
    (42, "B", OPTS, 0.0),
    ("😀 漢字", "B", OPTS, 0.0),
    ("B", "", OPTS, None),
    ("B", None, OPTS, None),
    ("B", "Z", OPTS, None),
]


@pytest.mark.parametrize("completion,gold,options,expected", MC_CASES)
def test_mc_accuracy_table(completion, gold, options, expected):
    assert rewards.mc_accuracy(["q"], [completion], [gold], options=[options]) == [expected]
    assert qa.score_choice(completion, gold, options) == expected


def test_extract_choice_gives_letter_for_logging():
    assert qa.extract_choice("The answer is (C).", OPTS) == "C"
    assert qa.extract_choice("A or C", OPTS) is None


def test_mc_options_column_shared_list():
    assert rewards.mc_accuracy(None, ["A", "London"], ["A", "B"], options=["Paris", "London"]) == [1.0, 1.0]


# (completion, gold, expected exact match, expected F1)
QA_CASES = [
    ("Paris", "Paris", 1.0, 1.0),
    ("paris", "Paris", 1.0, 1.0),
    ("Paris.", "Paris", 1.0, 1.0),
    ("The answer is Paris.", "Paris", 1.0, 1.0),
    ("Answer: Paris", "Paris", 1.0, 1.0),
    ("the Eiffel Tower", "Eiffel Tower", 1.0, 1.0),
    ("An apple", "apple", 1.0, 1.0),
    ("  Paris  ", "Paris", 1.0, 1.0),
    ("Paris, France", "Paris France", 1.0, 1.0),
    ("<answer>Paris</answer>", "Paris", 1.0, 1.0),
    ("Let me think.\nParis", "Paris", 1.0, 1.0),
    ("Paris", '["London", "Paris"]', 1.0, 1.0),
    ("Paris", ["London", "Paris"], 1.0, 1.0),
    ("1,000", "1000", 1.0, 1.0),
    ("George Washington", "Washington", 0.0, 2 / 3),
    ("Washington", "George Washington", 0.0, 2 / 3),
    ("the city of Paris", "Paris", 0.0, 0.5),
    ("New York City", "New York", 0.0, 0.8),
    ("London", "Paris", 0.0, 0.0),
    ("The answer is London.", "Paris", 0.0, 0.0),
    ("blue whale", "whale shark", 0.0, 0.5),
    ("", "Paris", 0.0, 0.0),
    ("the", "Paris", 0.0, 0.0),
    ("...", "Paris", 0.0, 0.0),
    (None, "Paris", 0.0, 0.0),
    (17, "17", 0.0, 0.0),
    ("17", 17, 1.0, 1.0),
    ("Paris", "", None, None),
    ("Paris", None, None, None),
    ("Paris", "[]", None, None),
    ("1776", "1776", 1.0, 1.0),
    ("in 1776", "1776", 0.0, 2 / 3),
    ("Answer: Marie Curie", "Marie Curie", 1.0, 1.0),
    ("marie  curie", "Marie Curie", 1.0, 1.0),
    ("Curie", "Marie Curie", 0.0, 2 / 3),
    ("Ünïcødé", "Ünïcødé", 1.0, 1.0),
    ("東京", "東京", 1.0, 1.0),
    ("Paris Paris", "Paris", 0.0, 2 / 3),
    ("The answer is: the moon.", "Moon", 1.0, 1.0),
    ([{"role": "assistant", "content": "Paris"}], "Paris", 1.0, 1.0),
    ("x" * 100_000, "Paris", 0.0, 0.0),
    ("Paris", '["not closed', 0.0, 0.0),
]


@pytest.mark.parametrize("completion,gold,em,f1", QA_CASES)
def test_qa_exact_match_table(completion, gold, em, f1):
    assert rewards.qa_exact_match(None, [completion], [gold]) == [em]


@pytest.mark.parametrize("completion,gold,em,f1", QA_CASES)
def test_qa_f1_table(completion, gold, em, f1):
    score = rewards.qa_f1(None, [completion], [gold])[0]
    assert score == (None if f1 is None else pytest.approx(f1))


@pytest.mark.parametrize("name, gold, wrong", [("qa_f1", "Paris", "The answer is Rome."),
                                                ("qa_exact_match", "Paris", "Rome"),
                                                ("tool_call_name", '[{"area": {"base": [10]}}]', '{"volume": {}}')])
def test_unparsed_frac_counts_unreadable_answers_not_wrong_ones(name, gold, wrong):
    """Before: the short-answer and tool rewards logged every 0.0 as unparsed, wrong answers included; now the
    share is of the completions their extractor reads no answer in, as for math and multiple choice."""
    logged = {}
    scores = rewards.get_reward(name)(None, [wrong, ""], [gold, gold], log_metric=logged.__setitem__)
    assert scores == [0.0, 0.0] and logged[f"rewards/{name}/unparsed_frac"] == 0.5


def test_normalize_answer():
    assert qa.normalize_answer("The  Quick, brown fox!") == "quick brown fox"


@pytest.mark.parametrize("completion", ["I think the answer is B.", "I'd say B.", "I believe it's (B)", "B"])
def test_mc_without_options_never_reads_the_pronoun_i(completion):
    """Without an options column the letters are A-D (or up to the gold); `I` in `I think` is not a choice."""
    assert rewards.mc_accuracy(["q"], [completion], ["B"]) == [1.0]
    assert rewards.mc_accuracy(["q"], [completion], ["B"], options=[["w", "x", "y", "z"]]) == [1.0]


def test_mc_without_options_letter_range_follows_the_gold():
    assert qa.extract_choice("The answer is F.", None, "B") is None  # A-D unless the gold is later
    assert rewards.mc_accuracy(["q"], ["The answer is F."], ["F"]) == [1.0]
    assert rewards.mc_accuracy(["q"], ["Answer: I"], ["I"]) == [1.0]
