"""Pool files, template syntax, validation and splitting."""

import json

import pytest
import yaml

from paft_rl.tasks import get_task
from prompt_pool import PoolValidationError, PromptPool, Template, UserError, load_pool, placeholders, read_pool, render


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    "text, fields, expected",
    [
        ("Q: {question}\nA:", {"question": "2+2?"}, "Q: 2+2?\nA:"),
        ("Put it in \\boxed{} please: {question}", {"question": "x"}, "Put it in \\boxed{} please: x"),
        ('Reply as {"answer": "..."} to {question}', {"question": "q"}, 'Reply as {"answer": "..."} to q'),
        ("Literal {{question}} and {question}", {"question": "q"}, "Literal {question} and q"),
        ("{ question } stays", {}, "{ question } stays"),
        ("{a}{b}{a}", {"a": 1, "b": 2}, "121"),
        ("unbalanced { and } braces", {}, "unbalanced { and } braces"),
        ("{{{question}}}", {"question": "q"}, "{q}"),
    ],
)
def test_render(text, fields, expected):
    assert render(text, fields) == expected


def test_placeholders_in_order_without_repeats():
    assert placeholders("{b} {a} {{c}} {b} \\boxed{} {d1}") == ["b", "a", "d1"]


def test_render_missing_field_names_template_and_fix():
    with pytest.raises(UserError, match=r"template 't1' uses \{answer\}.*field_aliases answer=FIELD"):
        render("{answer}", {"question": "q"}, template_id="t1")


def test_jsonl_defaults_ids_split_and_roundtrip(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "Q {question}"},
                                              {"id": "x", "text": "{question}?", "split": "heldout",
                                               "source": {"by": "me"}}])
    pool = read_pool(path)
    assert [t.id for t in pool] == ["p-0", "x"]
    assert [t.split for t in pool] == ["train", "heldout"]
    pool.save(tmp_path / "out.jsonl")
    again = read_pool(tmp_path / "out.jsonl")
    assert again.templates == pool.templates


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok {question}"}\n\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:3: not valid JSON"):
        read_pool(path)


def test_csv_and_literal_newlines(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('text,split\n"Question: {question}\\nAnswer:",heldout\nplain {question},\n')
    pool = read_pool(path)
    assert pool.templates[0].text == "Question: {question}\nAnswer:"
    assert [t.split for t in pool] == ["heldout", "train"]
    assert [t.id for t in pool] == ["p-0", "p-1"]


def test_xlsx_like_paft(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["text"])
    sheet.append(["Context: {ctx}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\nAnswer:"])
    sheet.append([None])
    sheet.append(["{ctx} -> {A} / {B} / {C} / {D}?"])
    book.save(tmp_path / "robust_hel.xlsx")
    pool = read_pool(tmp_path / "robust_hel.xlsx")
    assert len(pool) == 2 and pool.templates[0].text.startswith("Context: {ctx}\nA. {A}")
    assert pool.templates[1].id == "robust_hel-1"
    pool.validate(get_task("hellaswag"))


def test_yaml_list_and_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(["Q: {question}",
                                                     {"id": "h", "text": "{question}!", "split": "heldout"}]))
    (tmp_path / "b.yml").write_text(yaml.safe_dump({"version": 2, "templates": [{"text": "{question}"}]}))
    assert [t.id for t in read_pool(tmp_path / "a.yaml")] == ["a-0", "h"]
    assert len(read_pool(tmp_path / "b.yml")) == 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.jsonl", None, "does not exist"),
        ("p.txt", "x", "unsupported pool format"),
        ("p.csv", "prompt\nx\n", "no 'text' column"),
        ("p.yaml", "a: [", "not valid YAML"),
        ("p.json", "[1, 2]", "expected an object with 'text'"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=message):
        read_pool(tmp_path / name)


def pool_of(*templates):
    return PromptPool([Template(*t) if isinstance(t, tuple) else t for t in templates], name="test")


FAULTS = [
    ("empty text", pool_of(("a", "{question}"), ("b", "   ")), "template 'b' is empty"),
    ("duplicate text", pool_of(("a", "Q: {question}"), ("b", "Q:   {question}")), "template 'b' duplicates 'a'"),
    ("id twice", pool_of(("a", "{question}"), ("a", "Q {question}")), "id 'a' is used by 2 templates"),
    ("both splits", pool_of(("a", "{question}"), ("b", "{question}", "heldout")), "held-out template must be unseen"),
    ("no train", pool_of(("a", "{question}", "heldout")), "no train template"),
    ("unknown field", pool_of(("a", "{question} {answer}")), "uses unknown field {answer}"),
    ("missing required", pool_of(("a", "Solve this.")), "does not use required field {question}"),
    ("bad split", pool_of(("a", "{question}"), ("b", "Q {question}", "test")), "has split 'test'"),
]


@pytest.mark.parametrize("fault, pool, message", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_is_rejected_with_its_message(fault, pool, message):
    with pytest.raises(PoolValidationError) as caught:
        pool.validate(get_task("gsm8k"))
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_all_problems_reported_at_once():
    pool = pool_of(("a", ""), ("a", "{foo}"), ("c", "{question}", "heldout"))
    problems = pool.problems(get_task("gsm8k"))
    assert len(problems) >= 4


def test_option_sets_for_multiple_choice():
    task = get_task("hellaswag")
    pool_of(("a", "{ctx}\n{options}")).validate(task)
    pool_of(("a", "{ctx}\n{A} {B} {C} {D}")).validate(task)
    with pytest.raises(PoolValidationError, match="does not show the answer options"):
        pool_of(("a", "{ctx}\n{A} {B} {C}")).validate(task)


def test_aliases_map_pool_names_to_task_fields():
    pool = pool_of(("a", "{prompt} 1) {only_option1} 2) {only_option2}"))
    task = get_task("winogrande")
    with pytest.raises(PoolValidationError):
        pool.validate(task)
    aliased = pool.with_aliases({"prompt": "sentence", "only_option1": "option1", "only_option2": "option2"})
    aliased.validate(task)
    fields = {"sentence": "S _.", "option1": "x", "option2": "y"}
    assert aliased.render("a", fields) == "S _. 1) x 2) y"


def test_drop_duplicates_keeps_first_per_split():
    pool = pool_of(("a", "{question}"), ("b", " {question} "), ("c", "Q {question}"))
    kept, dropped = pool.drop_duplicates()
    assert [t.id for t in kept] == ["a", "c"] and dropped == ["b"]


def test_split_is_seeded_and_order_independent():
    pool = pool_of(*[(f"t{i}", f"{i} {{question}}") for i in range(20)])
    first = pool.split(0.25, seed=3)
    reversed_pool = pool_of(*reversed(pool.templates)).split(0.25, seed=3)
    assert {t.id for t in first.heldout} == {t.id for t in reversed_pool.heldout}
    assert len(first.heldout) == 5 and len(first.train) == 15
    assert {t.id for t in pool.split(0.25, seed=4).heldout} != {t.id for t in first.heldout}
    with pytest.raises(UserError, match="between 0 and 1"):
        pool.split(1.0, seed=0)


def test_stats():
    stats = pool_of(("a", "{question} now"), ("b", "Q: {question}", "heldout")).stats()
    assert (stats["count"], stats["train"], stats["heldout"]) == (2, 1, 1)
    assert stats["placeholders"] == {"question": 2}
    assert stats["chars"]["max"] == len("{question} now")


def test_load_pool_unknown_name():
    with pytest.raises(UserError, match="neither a file nor a built-in pool"):
        load_pool("no-such-pool")


def test_published_paft_pools_validate_with_aliases(shared_data):
    aliases = {
        "winogrande": {"prompt": "sentence", "only_option1": "option1", "only_option2": "option2"},
    }
    for name in ("hellaswag", "piqa", "race", "winogrande"):
        pool = load_pool(shared_data / "paft_prompts" / "train" / f"{name}.jsonl").with_aliases(aliases.get(name, {}))
        pool, dropped = pool.drop_duplicates()
        pool.validate(get_task(name))
        assert len(pool) > 280
