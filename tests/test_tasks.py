"""Task adapters read hub-schema rows, synthetic tasks are reproducible, data loading fails clearly."""

import json

import pytest

from paft_rl.tasks import TASKS, get_task, load_rows, parse_field_aliases
from prompt_pool import UserError

HUB_ROWS = {
    "gsm8k": ({"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}, "2+2=<<2+2=4>>4\n#### 4", "2+2=4\n#### 4"),
    "math": ({"problem": "x?", "solution": "so $\\boxed{3}$"}, "so $\\boxed{3}$", "so $\\boxed{3}$"),
    "math500": ({"problem": "x?", "solution": "s \\boxed{3}", "answer": "3"}, "3", "s \\boxed{3}"),
    "hellaswag": ({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "2"}, "C", "C"),
    "piqa": ({"goal": "g", "sol1": "x", "sol2": "y", "label": 1}, "B", "B"),
    "winogrande": ({"sentence": "S _", "option1": "x", "option2": "y", "answer": "1"}, "A", "A"),
    "race": ({"article": "t", "question": "q", "options": ["a", "b", "c", "d"], "answer": "D"}, "D", "D"),
    "arc": ({"question": "q", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "2"},
            "B", "B"),
    # Cloze: the answer is the option's text, after the space that follows the prompt's cue.
    "hellaswag_cloze": ({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": "2"}, "C", " c"),
    "piqa_cloze": ({"goal": "g", "sol1": "x", "sol2": "y", "label": 1}, "B", " y"),
    "arc_cloze": ({"question": "q", "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]}, "answerKey": "2"},
                  "B", " b"),
}


@pytest.mark.parametrize("name", sorted(HUB_ROWS))
def test_hub_row_to_example(name):
    row, gold, target = HUB_ROWS[name]
    example = get_task(name).example(row)
    assert example.gold == gold and example.target == target
    assert set(example.fields) <= set(get_task(name).fields)


def test_multiple_choice_fields_are_lettered_and_blocked():
    example = get_task("race").example(HUB_ROWS["race"][0])
    assert example.fields["A"] == "a" and example.fields["D"] == "d"
    assert example.fields["options"] == "A. a\nB. b\nC. c\nD. d"
    assert example.options == ["a", "b", "c", "d"]
    arc = get_task("arc").example(HUB_ROWS["arc"][0])
    assert arc.fields["D"] == "" and arc.fields["E"] == ""


def test_answer_style_text():
    task = get_task("hellaswag").with_answer_style("text")
    assert task.example(HUB_ROWS["hellaswag"][0]).target == "c"


def test_bfcl_row():
    row = {
        "question": json.dumps([[{"role": "user", "content": "Area of a 3x4 rectangle?"}]]),
        "function": json.dumps([{"name": "area", "parameters": {"type": "dict", "properties": {}}}]),
        "ground_truth": json.dumps([{"area": {"w": [3], "h": [4], "unit": ["", "cm"]}}]),
    }
    example = get_task("bfcl").example(row)
    assert example.fields["question"] == "Area of a 3x4 rectangle?"
    assert json.loads(example.target) == [{"name": "area", "arguments": {"w": 3, "h": 4}}]


def test_row_that_does_not_fit_gives_clear_error():
    with pytest.raises(UserError, match="task 'piqa' cannot read this row.*needs columns goal, sol1, sol2, label"):
        get_task("piqa").example({"goal": "g"})


@pytest.mark.parametrize("name", ["synth_arith", "synth_mc", "synth_tool"])
def test_synthetic_tasks_are_reproducible(name):
    task = get_task(name)
    first = load_rows(task, limit=50, seed=3)
    assert first.to_list() == load_rows(task, limit=50, seed=3).to_list()
    assert first.to_list() != load_rows(task, limit=50, seed=4).to_list()
    assert first["row_id"] == list(range(50))
    examples = [task.example(row) for row in first]
    assert all(e.gold and e.target for e in examples)
    assert len({json.dumps(e.fields, sort_keys=True) for e in examples}) > 45


def test_synthetic_mc_answers_with_text_and_is_balanced():
    task = get_task("synth_mc")
    examples = [task.example(row) for row in load_rows(task, limit=400)]
    assert all(e.target == e.options["ABCD".index(e.gold)] for e in examples)
    letters = [e.gold for e in examples]
    assert all(60 < letters.count(letter) < 140 for letter in "ABCD")


def test_synthetic_arith_answers_are_right():
    task = get_task("synth_arith")
    for row in load_rows(task, limit=100):
        steps = row["answer"].split("####")[0]
        last = steps.strip().rstrip(".").split("=")[-1].strip()
        assert last == task.example(row).gold


def test_load_local_jsonl_and_limit(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"goal": f"g{i}", "sol1": "a", "sol2": "b", "label": i % 2}) + "\n"
                            for i in range(7)))
    rows = load_rows(get_task("piqa"), str(path), limit=5)
    assert len(rows) == 5 and rows["row_id"] == [0, 1, 2, 3, 4]


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"goal": "g", "sol1": "a"}) + "\n")
    with pytest.raises(UserError, match=r"lacks column\(s\) sol2, label"):
        load_rows(get_task("piqa"), str(path))


@pytest.mark.parametrize("data, message", [("./nope.jsonl", "does not exist"),
                                           ("no-such-org/no-such-set", "cannot load dataset")])
def test_unloadable_data(data, message):
    with pytest.raises(UserError, match=message):
        load_rows(get_task("gsm8k"), data)


def test_limit_zero_rejected():
    with pytest.raises(UserError, match="--limit must be a positive"):
        load_rows(get_task("synth_mc"), limit=0)


def test_unknown_task_lists_known():
    with pytest.raises(UserError, match="known tasks: .*gsm8k"):
        get_task("nope")


def test_field_alias_parsing():
    assert parse_field_aliases(["prompt=sentence", " a = b "]) == {"prompt": "sentence", "a": "b"}
    with pytest.raises(UserError, match="NAME=FIELD"):
        parse_field_aliases(["prompt"])


def test_shared_data_files_load(shared_data):
    files = {"gsm8k": "gsm8k/test.jsonl", "math500": "math/test.jsonl", "hellaswag": "hellaswag/validation.jsonl",
             "piqa": "piqa/validation.jsonl", "winogrande": "winogrande/validation.jsonl",
             "race": "race/validation.jsonl", "arc": "arc_challenge/test.jsonl", "bfcl": "bfcl/BFCL_v4_parallel.json"}
    for name, file in files.items():
        task = get_task(name)
        rows = load_rows(task, str(shared_data / file), limit=20)
        assert all(task.example(row).gold for row in rows), name


def test_every_task_is_registered_once():
    assert len(TASKS) == 15
