"""Adapters for public benchmarks, reading their Hugging Face hub schema.

Field names follow the hub columns (``question``, ``ctx``, ``goal``, ``sol1``, ``sentence``, ``article``...)
so that templates written against the dataset card work; options are also offered lettered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from prompt_pool import read_jsonl

from .base import Example, Task, choice_example

_CALCULATOR = re.compile(r"<<[^>]*>>")


def _gsm8k(row: Mapping[str, Any]) -> Example:
    answer = str(row["answer"])
    # The `<<48/2=24>>` calculator annotations are an artefact of how GSM8K was written, not reasoning.
    return Example(fields={"question": str(row["question"])}, gold=answer, target=_CALCULATOR.sub("", answer))


def _math(row: Mapping[str, Any]) -> Example:
    solution = str(row.get("solution") or "")
    gold = row.get("answer") or solution
    if not gold:
        raise KeyError("answer")
    return Example(fields={"problem": str(row["problem"])}, gold=str(gold), target=solution or f"\\boxed{{{gold}}}")


def _hellaswag(row: Mapping[str, Any]) -> Example:
    fields = {"ctx": str(row["ctx"]), "activity_label": str(row.get("activity_label", ""))}
    return choice_example(fields, row["endings"], int(row["label"]))


def _piqa(row: Mapping[str, Any]) -> Example:
    fields = {"goal": str(row["goal"]), "sol1": str(row["sol1"]), "sol2": str(row["sol2"])}
    return choice_example(fields, [row["sol1"], row["sol2"]], int(row["label"]))


def _winogrande(row: Mapping[str, Any]) -> Example:
    fields = {"sentence": str(row["sentence"]), "option1": str(row["option1"]), "option2": str(row["option2"])}
    return choice_example(fields, [row["option1"], row["option2"]], int(row["answer"]) - 1)


def _race(row: Mapping[str, Any]) -> Example:
    fields = {"article": str(row["article"]), "question": str(row["question"])}
    return choice_example(fields, row["options"], "ABCD".index(str(row["answer"]).strip().upper()))


def _arc(row: Mapping[str, Any]) -> Example:
    choices = row["choices"]
    labels = [str(label).strip() for label in choices["label"]]
    # A few ARC items are labelled 1-4 instead of A-D: the gold is found by position either way.
    answer = labels.index(str(row["answerKey"]).strip())
    return choice_example({"question": str(row["question"])}, choices["text"], answer, letters=5)


def read_bfcl_file(path: Path):
    """Read a BFCL question file and join its ``possible_answer`` file (same name, sibling folder).

    BFCL files are JSON Lines with per-row function schemas of different shapes, which Arrow cannot
    infer as one struct, so nested values are kept as JSON strings.
    """
    import datasets

    answer_path = path.parent / "possible_answer" / path.name
    answers = {}
    if answer_path.exists():
        answers = {record["id"]: record["ground_truth"] for _, record in read_jsonl(answer_path)}
    rows = []
    for number, record in read_jsonl(path):
        truth = record.get("ground_truth", answers.get(record.get("id"), []))
        rows.append({
            "id": str(record.get("id", number - 1)),
            "question": json.dumps(record["question"], ensure_ascii=False),
            "function": json.dumps(record["function"], ensure_ascii=False),
            "ground_truth": json.dumps(truth, ensure_ascii=False),
        })
    return datasets.Dataset.from_list(rows)


def _bfcl(row: Mapping[str, Any]) -> Example:
    question = row["question"]
    if isinstance(question, str):
        if question.lstrip().startswith("["):
            question = json.loads(question)
        else:
            question = [[{"role": "user", "content": question}]]
    turn = question[0] if question and isinstance(question[0], list) else question
    user_text = "\n".join(str(m["content"]) for m in turn if m.get("role") == "user")
    functions = row["function"]
    if isinstance(functions, str):
        functions = json.loads(functions)
    truth = row.get("ground_truth")
    if truth is None:
        raise KeyError("ground_truth")
    if isinstance(truth, str):
        truth = json.loads(truth)
    fields = {"question": user_text, "functions": json.dumps(functions, indent=2, ensure_ascii=False)}
    return Example(fields=fields, gold=json.dumps(truth, ensure_ascii=False), target=reference_tool_calls(truth))


def reference_tool_calls(ground_truth: list) -> str:
    """A completion that makes the expected calls, taking the first acceptable value of each argument."""
    calls = []
    for expected in ground_truth:
        for name, arguments in expected.items():
            chosen = {key: values[0] for key, values in arguments.items() if values and values[0] != ""}
            calls.append({"name": name, "arguments": chosen})
    return json.dumps(calls, ensure_ascii=False)


MC_FOUR = (("A", "B", "C", "D"), ("options",))

HUB_TASKS = [
    Task(
        name="gsm8k", description="Solve a grade-school math word problem and give the final number.",
        fields=("question",), required_fields=("question",), columns=("question", "answer"), to_example=_gsm8k,
        reward="math_accuracy", answer_cue="answer", hub_id="openai/gsm8k", hub_config="main", max_new_tokens=512,
    ),
    Task(
        name="math", description="Solve a competition mathematics problem and give the final answer in \\boxed{}.",
        fields=("problem",), required_fields=("problem",), columns=("problem", "solution"), to_example=_math,
        reward="math_accuracy", answer_cue="\\boxed", hub_id="DigitalLearningGmbH/MATH-lighteval", max_new_tokens=1024,
    ),
    Task(
        name="math500", description="Solve a competition mathematics problem and give the final answer in \\boxed{}.",
        fields=("problem",), required_fields=("problem",), columns=("problem", "answer"), to_example=_math,
        reward="math_accuracy", answer_cue="\\boxed", hub_id="HuggingFaceH4/MATH-500", train_split="test",
        max_new_tokens=1024, pool="math",
    ),
    Task(
        name="hellaswag", description="Pick the most plausible continuation of an everyday scene from four endings.",
        fields=("ctx", "activity_label", "A", "B", "C", "D", "options"), required_fields=("ctx",),
        option_sets=MC_FOUR, columns=("ctx", "endings", "label"), to_example=_hellaswag, reward="mc_accuracy",
        hub_id="Rowan/hellaswag", eval_split="validation", max_new_tokens=16, top_threshold=0.9,
    ),
    Task(
        name="piqa", description="Pick which of two solutions achieves a physical, everyday goal.",
        fields=("goal", "sol1", "sol2", "A", "B", "options"), required_fields=("goal",),
        option_sets=(("sol1", "sol2"), ("A", "B"), ("options",)), columns=("goal", "sol1", "sol2", "label"),
        to_example=_piqa, reward="mc_accuracy", hub_id="ybisk/piqa", eval_split="validation", max_new_tokens=16,
        top_threshold=0.85,
    ),
    Task(
        name="winogrande", description="Pick which of two names or things fills the blank (_) in a sentence.",
        fields=("sentence", "option1", "option2", "A", "B", "options"), required_fields=("sentence",),
        option_sets=(("option1", "option2"), ("A", "B"), ("options",)),
        columns=("sentence", "option1", "option2", "answer"), to_example=_winogrande, reward="mc_accuracy",
        hub_id="allenai/winogrande", hub_config="winogrande_xl", eval_split="validation", max_new_tokens=16,
        top_threshold=0.8,
    ),
    Task(
        name="race", description="Read an article and answer a question about it by picking one of four options.",
        fields=("article", "question", "A", "B", "C", "D", "options"), required_fields=("article", "question"),
        option_sets=MC_FOUR, columns=("article", "question", "options", "answer"), to_example=_race,
        reward="mc_accuracy", hub_id="ehovy/race", hub_config="all", eval_split="validation", max_new_tokens=16,
        top_threshold=0.85,
    ),
    Task(
        name="arc", description="Answer a grade-school science question by picking one of the options.",
        fields=("question", "A", "B", "C", "D", "E", "options"), required_fields=("question",),
        option_sets=(("options",),), columns=("question", "choices", "answerKey"), to_example=_arc,
        reward="mc_accuracy", hub_id="allenai/ai2_arc", hub_config="ARC-Challenge", max_new_tokens=16,
        top_threshold=0.8,
    ),
    Task(
        name="bfcl", description="Call the right function(s) with the right arguments for a user request.",
        fields=("question", "functions"), required_fields=("question", "functions"),
        columns=("question", "function", "ground_truth"), to_example=_bfcl, reward="tool_call_accuracy",
        answer_cue="", hub_id="gorilla-llm/Berkeley-Function-Calling-Leaderboard", train_split="train",
        max_new_tokens=256, read_file=read_bfcl_file,
    ),
]


def cloze_variant(task: Task, fields: tuple[str, ...], description: str) -> Task:
    """``task`` scored cloze style: templates show only the context ``fields`` and the answer is an option's text
    (same data, columns and reward)."""
    return replace(task, name=f"{task.name}_cloze", description=description, fields=fields,
                   required_fields=fields[:1], option_sets=(), cloze=True, mc_answer_style="text", answer_cue="",
                   pool=None)


_BY_NAME = {task.name: task for task in HUB_TASKS}
HUB_TASKS += [
    cloze_variant(_BY_NAME["piqa"], ("goal",), "Continue an everyday goal with the solution that achieves it."),
    cloze_variant(_BY_NAME["hellaswag"], ("ctx", "activity_label"),
                  "Continue an everyday scene with its most plausible ending."),
    cloze_variant(_BY_NAME["arc"], ("question",), "Answer a grade-school science question with the answer's text."),
]
