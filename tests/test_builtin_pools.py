"""The built-in template pools: valid for their tasks, big enough, rendered on real rows, and our own.

Held-out templates are meant to be unseen in *style*, not only in wording (train: prose, questions,
directives, personas; held-out: JSON, YAML, tables, forms, emails...), so that evaluating on them measures
robustness to prompt format; the style label of each template is kept in its ``source``.
"""

import json
import re
from pathlib import Path

import pytest

from paft_rl.tasks import TASKS, load_rows
from prompt_pool import load_pool
from prompt_pool.io import BUILTIN_DIR, builtin_names
from prompt_pool.template import normalise_whitespace

EXPECTED_POOLS = {"gsm8k", "math", "hellaswag", "piqa", "winogrande", "race", "arc", "bfcl",
                  "synth_arith", "synth_mc", "synth_tool", "piqa_cloze", "hellaswag_cloze", "arc_cloze"}
MIN_TRAIN, MIN_HELDOUT = 24, 10

# A real evaluation file per hub task, relative to shared/data.
HUB_FILES = {
    "gsm8k": "gsm8k/test.jsonl",
    "math": "math/test.jsonl",
    "math500": "math/test.jsonl",
    "hellaswag": "hellaswag/validation.jsonl",
    "piqa": "piqa/validation.jsonl",
    "winogrande": "winogrande/validation.jsonl",
    "race": "race/validation.jsonl",
    "arc": "arc_challenge/test.jsonl",
    "piqa_cloze": "piqa/validation.jsonl",
    "hellaswag_cloze": "hellaswag/validation.jsonl",
    "arc_cloze": "arc_challenge/test.jsonl",
    "bfcl": "bfcl/BFCL_v4_simple_python.json",
}
ROWS_PER_TASK = 3


def _style(template) -> str:
    assert isinstance(template.source, dict), f"{template.id}: source should be an object with a style"
    return template.source["style"]


def _tasks_using(pool_name: str) -> list:
    return [task for task in TASKS.values() if task.builtin_pool == pool_name]


def test_every_task_has_a_builtin_pool():
    assert set(builtin_names()) == EXPECTED_POOLS
    assert {task.builtin_pool for task in TASKS.values()} == EXPECTED_POOLS


@pytest.mark.parametrize("pool_name", sorted(EXPECTED_POOLS))
def test_pool_is_valid_and_large_enough(pool_name):
    pool = load_pool(pool_name)
    tasks = _tasks_using(pool_name)
    assert tasks, f"no task uses the built-in pool {pool_name!r}"
    for task in tasks:
        pool.validate(task)
    assert len(pool.train) >= MIN_TRAIN and len(pool.heldout) >= MIN_HELDOUT
    assert all(t.id == f"{pool_name}-{t.split}-{i:02d}" for split in ("train", "heldout")
               for i, t in enumerate(pool.subset(split), start=1))
    for template in pool:
        assert template.text == template.text.strip(), f"{template.id}: leading or trailing blanks"
        lines = template.text.split("\n")
        assert all(line == line.rstrip() for line in lines), f"{template.id}: trailing whitespace"
        assert 1 <= sum(1 for line in lines if line.strip()) <= 8, f"{template.id}: too long"


@pytest.mark.parametrize("pool_name", sorted(EXPECTED_POOLS))
def test_heldout_styles_are_disjoint_from_train_styles(pool_name):
    pool = load_pool(pool_name)
    train_styles = {_style(t) for t in pool.train}
    heldout_styles = {_style(t) for t in pool.heldout}
    assert not train_styles & heldout_styles
    # Enough variety on both sides that no single format dominates.
    assert len(train_styles) >= 4 and len(heldout_styles) >= 8


@pytest.mark.parametrize("pool_name", ["hellaswag", "piqa", "winogrande", "race", "synth_mc"])
def test_multiple_choice_pools_mix_option_layouts(pool_name):
    pool = load_pool(pool_name)
    for split in ("train", "heldout"):
        uses_block = [("options" in t.fields) for t in pool.subset(split)]
        assert any(uses_block) and not all(uses_block), f"{pool_name} {split}: mix {{options}} with lettered fields"


@pytest.mark.parametrize("pool_name", ["gsm8k", "math", "synth_arith"])
def test_math_pools_often_ask_for_a_checkable_final_answer(pool_name):
    cue = re.compile(r"\\boxed|####|the answer is", re.IGNORECASE)
    pool = load_pool(pool_name)
    share = sum(bool(cue.search(t.text)) for t in pool) / len(pool)
    assert 0.3 <= share < 1.0, f"{pool_name}: {share:.0%} of templates name a checkable answer format"


def test_synthetic_mc_pool_never_asks_for_a_bare_letter():
    # Its reference completion is the option text; asking for a letter would contradict the target.
    pool = load_pool("synth_mc")
    for template in pool:
        letter_cue = re.search(r"\b(reply|answer|respond) with (the |a |one )?letter", template.text, re.IGNORECASE)
        assert not letter_cue, template.id


# ---------------------------------------------------------------------------- originality
def _paft_texts(shared_file) -> dict[str, list[str]]:
    texts = {}
    for path in sorted(shared_file("paft_prompts/train").glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            texts[path.stem] = [json.loads(line)["text"] for line in handle if line.strip()]
    return texts


def _trigrams(text: str) -> set[tuple[str, ...]]:
    # Placeholders and one-letter option labels are shared by every multiple-choice prompt: not phrasing.
    words = re.findall(r"[a-z]{2,}", re.sub(r"\{[A-Za-z_]\w*\}", " ", text.lower()))
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def test_no_template_copies_paft_published_pools(shared_file):
    published = [text for texts in _paft_texts(shared_file).values() for text in texts]
    exact = {normalise_whitespace(text) for text in published}
    published_grams = [grams for grams in map(_trigrams, published) if len(grams) >= 4]
    for pool_name in sorted(EXPECTED_POOLS):
        for template in load_pool(pool_name):
            assert normalise_whitespace(template.text) not in exact, template.id
            grams = _trigrams(template.text)
            if len(grams) < 4:
                continue
            # Word-trigram Jaccard: close paraphrases share most of their phrasing.
            closest = max(len(grams & other) / len(grams | other) for other in published_grams)
            assert closest < 0.4, f"{template.id} is too close to a PAFT template ({closest:.2f})"


# ---------------------------------------------------------------------------- rendering real rows
def _head_copy(source: Path, target: Path, lines: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open(encoding="utf-8") as handle:
        head = [next(handle) for _ in range(lines)]
    target.write_text("".join(head), encoding="utf-8")


def _real_rows(task, tmp_path: Path, shared_file):
    """A few real rows of ``task``: generated for synthetic tasks, else the first rows of a shared data file."""
    if task.generate is not None:
        return load_rows(task, limit=ROWS_PER_TASK, split="test")
    source = shared_file(HUB_FILES[task.name])
    # Copy the first rows (and, for BFCL, their answers) so that loading stays fast.
    local = tmp_path / source.name
    _head_copy(source, local, ROWS_PER_TASK)
    answers = source.parent / "possible_answer" / source.name
    if answers.is_file():
        _head_copy(answers, tmp_path / "possible_answer" / source.name, ROWS_PER_TASK)
    return load_rows(task, data=str(local))


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_template_renders_a_real_row(task_name, tmp_path, shared_file):
    task = TASKS[task_name]
    pool = load_pool(task.builtin_pool)
    rows = _real_rows(task, tmp_path, shared_file)
    assert len(rows) == ROWS_PER_TASK
    for row in rows:
        example = task.example(row)
        for template in pool:
            prompt = pool.render(template, example.fields)
            for name in task.required_fields:
                assert example.fields[name] in prompt, f"{template.id}: {name} missing from the prompt"
            for option in example.options or []:
                if task.cloze:  # the options are the continuations scored after the prompt, never shown in it
                    assert option not in prompt, f"{template.id}: cloze prompt shows option {option!r}"
                else:
                    assert option in prompt, f"{template.id}: option {option!r} missing from the prompt"


def test_builtin_pool_files_are_one_object_per_line():
    for path in sorted(BUILTIN_DIR.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            record = json.loads(line)
            required = {"id", "text", "split", "source"}
            assert required <= set(record) <= required | {"answer_format"}, f"{path.name}:{number}"
            assert record["source"]["author"] == "paft-rl team", f"{path.name}:{number}"


@pytest.mark.parametrize("pool_name", ["piqa_cloze", "hellaswag_cloze", "arc_cloze"])
def test_cloze_templates_end_where_the_answer_continues(pool_name):
    # The reference completion is " <option text>": the space loglik scoring puts after a prompt that ends in a
    # cue or in the context itself, so SFT trains on the very continuation evaluation scores.
    for template in load_pool(pool_name):
        assert not template.text[-1].isspace(), template.id
        assert not template.answer_format, f"{template.id}: a cloze answer is the option's text, no format"
