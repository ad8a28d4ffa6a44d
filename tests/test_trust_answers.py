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


def test_an_option_that_starts_with_a_capital_a_is_its_text_not_letter_a():
    options = ["A cup of cold water.", "A bowl of warm water."]
    assert qa.extract_choice("A bowl of warm water.\nIt holds more.", options) == "B"
    assert qa.extract_choice("A bowl of warm water. It holds more.", options) == "B"


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


@pytest.mark.parametrize("name, options_of, limit, ways", [
    ("piqa/validation.jsonl", lambda row: [row["sol1"], row["sol2"]], 2000, 4),
    ("hellaswag/validation.jsonl", lambda row: row["endings"], 300, 10),
])
def test_real_options_copied_whole_are_scored_right(shared_file, name, options_of, limit, ways):
    checked = 0
    for options in real_rows(shared_file(name), options_of, limit):
        for index, option in enumerate(options):
            letter = LETTERS[index]
            for written in ways_to_write(option, letter)[:ways]:
                scores = [qa.score_choice(written, LETTERS[i], options) for i in range(len(options))]
                assert scores == [float(i == index) for i in range(len(options))], (written, options)
                checked += 1
    assert checked > 1000


# ---------------------------------------------------------------------------- a budget that holds a text answer
def piqa_file(tmp_path, repeat=3):
    long_option = " ".join(["Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper"
                            " strips, and supply it with a water bottle and a food dish."] * repeat)
    rows = [{"goal": "How do I ready a guinea pig cage?", "sol1": long_option, "sol2": "Use a box.", "label": 0}]
    path = tmp_path / "piqa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, long_option


def test_eval_sizes_the_budget_of_text_answers_from_the_options(tmp_path, tiny_model, capsys):
    """Before: PIQA's budget of 16 tokens cut a 96-token option without a word, so a right answer scored 0."""
    from transformers import AutoTokenizer

    from paft_rl.eval.runner import EvalSettings, build_cells, eval_templates, generation_budget
    from paft_rl.tasks import TEXT_ANSWER_MARGIN, get_task

    path, long_option = piqa_file(tmp_path)
    tokens = len(AutoTokenizer.from_pretrained(str(tiny_model))(long_option, add_special_tokens=False)["input_ids"])
    base = dict(task="piqa", models=[str(tiny_model)], out=str(tmp_path / "out"), data=str(path))
    budget = {}
    for style, asked in (("text", None), ("letter", None), ("text", 8), ("text", tokens + 50)):
        settings = EvalSettings(**base, mc_answer_style=style, max_new_tokens=asked)
        task = get_task("piqa").with_answer_style(style)
        budget[style, asked] = generation_budget(task, build_cells(task, eval_templates(task, "heldout", []),
                                                                   settings), settings)
    assert tokens > 16 and budget["text", None] == (tokens + TEXT_ANSWER_MARGIN, None)
    assert budget["letter", None] == (16, None) and budget["text", tokens + 50] == (tokens + 50, None)
    assert budget["text", 8] == (8, f"paft-rl eval: note: max_new_tokens 8 cuts text answers: option "  # kept, said
                                    f"{long_option[:37]}... is {tokens} tokens (leave max_new_tokens unset to size "
                                    "the budget from the options)")


def test_eval_records_the_budget_it_generated_with_and_says_when_it_cuts(tmp_path, tiny_model, capsys):
    from paft_rl.cli import main

    path, _ = piqa_file(tmp_path, repeat=1)
    (tmp_path / "one.jsonl").write_text(json.dumps(load_pool_template("piqa")) + "\n")
    argv = ["eval", "--task", "piqa", "--data", str(path), "--models", str(tiny_model), "--mc_answer_style", "text",
            "--templates", str(tmp_path / "one.jsonl"), "--no_progress", "--out"]
    assert main([*argv, str(tmp_path / "sized")]) == 0
    settings = json.loads((tmp_path / "sized" / "results.json").read_text())["settings"]
    assert settings["max_new_tokens"] > 16 and settings["mc_answer_style"] == "text"
    assert "note:" not in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "cut"), "--max_new_tokens", "3"]) == 0
    assert "paft-rl eval: note: max_new_tokens 3 cuts text answers" in capsys.readouterr().err


def load_pool_template(name):
    from prompt_pool import load_pool

    return load_pool(name).heldout[0].to_dict()


def test_grpo_says_when_completions_cannot_hold_a_text_answer(tmp_path, tiny_model, capsys, monkeypatch):
    from trl import GRPOTrainer

    from paft_rl.cli import main

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop("stopped before training")

    monkeypatch.setattr(GRPOTrainer, "__init__", stop)  # PaftGRPOTrainer checks and notes first, then builds TRL's
    path, long_option = piqa_file(tmp_path)
    code = main(["grpo", "--model_name_or_path", str(tiny_model), "--task", "piqa", "--data", str(path),
                 "--mc_answer_style", "text", "--max_completion_length", "8", "--per_device_train_batch_size", "2",
                 "--num_generations", "2", "--output_dir", str(tmp_path / "run"), "--report_to", "none"])
    err = capsys.readouterr().err
    assert code == 1 and "stopped before training" in err
    assert f"paft-rl: max_completion_length 8 cuts text answers: option {long_option[:37]}... is " in err
