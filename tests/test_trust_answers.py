"""A right answer is read as right: an option's text copied whole (every sentence of it), with or without its
letter or a lead-in, scores 1 for that option and 0 for the others; the closest option counts only when no other
is nearly as close; and text answers get a generation budget that holds the longest option."""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards import qa
from rewards.qa import normalize_answer

LETTERS = string.ascii_uppercase

# PIQA's validation row 1 (two-sentence options that differ in one word): before, a verbatim copy was unparsed.
PIQA_LIKE = ["Pour the water into a glass. Then stir it with a spoon until the sugar dissolves.",
             "Pour the water into a glass. Then stir it with a fork until the sugar dissolves."]


def ways_to_write(option: str, letter: str) -> list[str]:
    """How a person or a model writes an option as the answer."""
    return [option, f"{letter}. {option}", f"({letter}) {option}", f"The answer is {option}", f"Answer: {option}",
            f"The answer is: {letter}. {option}", f"  {option.lower()}  ", option.rstrip("."), f"**{option}**",
            f"{option}\nThis works because the rest would not."]


@pytest.mark.parametrize("index", [0, 1])
def test_a_copied_multi_sentence_option_is_read_as_that_option(index):
    letter = LETTERS[index]
    for written in ways_to_write(PIQA_LIKE[index], letter):
        assert qa.extract_choice(written, PIQA_LIKE) == letter, written
        assert rewards.mc_accuracy(["q"], [written], [letter], options=[PIQA_LIKE]) == [1.0]
        assert rewards.mc_accuracy(["q"], [written], [LETTERS[1 - index]], options=[PIQA_LIKE]) == [0.0]


def test_a_letter_that_names_another_option_than_the_text_is_no_answer():
    assert qa.extract_choice(f"B. {PIQA_LIKE[0]}", PIQA_LIKE) is None


def test_the_closest_option_counts_only_when_unambiguous():
    options = ["Put the eggs in boiling water for ten minutes, then cool them in a bowl of ice water.",
               "Crack the eggs into a hot pan with butter and stir until they set."]
    assert qa.extract_choice(options[0][:60], options) == "A"  # cut short by the generation budget
    assert qa.extract_choice(options[1].replace("butter", "oil"), options) == "B"
    assert qa.extract_choice(PIQA_LIKE[0][:40], PIQA_LIKE) is None  # both options start so
    assert qa.extract_choice(PIQA_LIKE[0].replace("spoon", "stick"), PIQA_LIKE) is None  # as close to both
    assert qa.extract_choice("I do not know what to do with the water.", PIQA_LIKE) is None


# ---------------------------------------------------------------------------- fuzzing with generated options
WORD = st.text(alphabet=string.ascii_letters + "'-", min_size=1, max_size=9)
SENTENCE = st.lists(WORD, min_size=1, max_size=12).map(lambda words: " ".join(words).capitalize() + ".")
OPTION = st.lists(SENTENCE, min_size=1, max_size=4).map(" ".join)


def distinct(options: list[str]) -> bool:
    norms = [normalize_answer(o) for o in options]
    return all(norms) and len(set(norms)) == len(norms)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPTION, min_size=2, max_size=5).filter(distinct), st.data())
def test_fuzz_every_copied_option_is_scored_right_and_the_others_wrong(options, data):
    index = data.draw(st.integers(0, len(options) - 1))
    letter = LETTERS[index]
    written = data.draw(st.sampled_from(ways_to_write(options[index], letter)))
    scores = [qa.score_choice(written, LETTERS[i], options) for i in range(len(options))]
    assert scores == [float(i == index) for i in range(len(options))], (written, options)


# ---------------------------------------------------------------------------- fuzzing with real options
def real_rows(path, options_of, limit):
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number >= limit:
                return
            options = [str(o).strip() for o in options_of(json.loads(line))]
            if distinct(options):  # a row with two identical options cannot be read either way
                yield options


@pytest.mark.parametrize("name, options_of, limit", [
    ("piqa/validation.jsonl", lambda row: [row["sol1"], row["sol2"]], 2000),
    ("hellaswag/validation.jsonl", lambda row: row["endings"], 400),
])
def test_real_options_copied_whole_are_scored_right(shared_file, name, options_of, limit):
    checked = 0
    for options in real_rows(shared_file(name), options_of, limit):
        for index, option in enumerate(options):
            letter = LETTERS[index]
            for written in (option, f"{letter}. {option}", f"The answer is {option}"):
                scores = [qa.score_choice(written, LETTERS[i], options) for i in range(len(options))]
                assert scores == [float(i == index) for i in range(len(options))], (written, options)
                checked += 1
    assert checked > 1000
