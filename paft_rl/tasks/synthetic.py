"""Synthetic tasks generated in code from a seed, for the offline demo and the tests.

They need no hub and no download, yet have the shape of the real tasks: a numeric word problem (GSM8K's
shape), a four-option multiple choice (HellaSwag's shape) and a tool call (BFCL's shape). Row ``i`` is a pure
function of ``(seed, split, i)``: rows come in blocks of `BLOCK`, each drawn from a stream seeded by the block's
number, so any row is made without the rows before it (``pool render --index 99999999`` makes one block), and
train and test use different streams of the same generator.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from .base import Example, Task, choice_example
from .hub import reference_tool_calls

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar", "Priya", "Sam"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards", "coins", "stamps"]


BLOCK = 1000  # rows per seeded stream: a row costs at most BLOCK rows of work, whatever its index


def _rng(name: str, seed: int, split: str, block: int = 0) -> random.Random:
    # Block 0 keeps the stream of the generator before blocks, so the first BLOCK rows are the same as then.
    return random.Random(f"{name}:{split}:{seed}" + (f":{block}" if block else ""))


# ---------------------------------------------------------------------------- arithmetic word problems
def _arith_row(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(5, 60), rng.randint(2, 40), rng.randint(1, 20)
        c = min(c, a + b)
        question = (f"{name} has {a} {item}. {name} gets {b} more and then gives away {c}. "
                    f"How many {item} does {name} have now?")
        steps, answer = f"{a} + {b} = {a + b}, and {a + b} - {c} = {a + b - c}.", a + b - c
    elif kind == 1:
        a, b = rng.randint(2, 12), rng.randint(2, 15)
        question = f"{name} packs {a} boxes with {b} {item} in each box. How many {item} are there in all?"
        steps, answer = f"{a} * {b} = {a * b}.", a * b
    elif kind == 2:
        b, q = rng.randint(2, 9), rng.randint(2, 20)
        question = f"{name} shares {b * q} {item} equally among {b} friends. How many {item} does each friend get?"
        steps, answer = f"{b * q} / {b} = {q}.", q
    else:
        price, count, paid = rng.randint(2, 9), rng.randint(2, 8), 0
        paid = price * count + rng.randint(0, 20)
        question = (f"{item.capitalize()} cost ${price} each. {name} buys {count} and pays with ${paid}. "
                    f"How much change does {name} get?")
        cost = price * count
        steps, answer = f"{price} * {count} = {cost}, and {paid} - {cost} = {paid - cost}.", paid - cost
    return {"question": question, "answer": f"{steps}\n#### {answer}"}


def _arith_example(row: Mapping[str, Any]) -> Example:
    steps, _, number = str(row["answer"]).rpartition("####")
    number = number.strip()
    return Example(fields={"question": str(row["question"])}, gold=number,
                   target=f"{steps.strip()} The answer is {number}.")


# ---------------------------------------------------------------------------- four-option multiple choice
CATEGORIES = {
    "animal": ["dog", "cat", "horse", "rabbit", "tiger", "eagle", "whale", "frog"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown"],
    "fruit": ["apple", "banana", "cherry", "mango", "pear", "grape", "lemon", "plum"],
    "vehicle": ["car", "bus", "truck", "bicycle", "train", "boat", "tractor", "scooter"],
}
FILLERS = ["chair", "window", "spoon", "pillow", "ladder", "candle", "bottle", "carpet", "pencil", "mirror"]


def _mc_row(rng: random.Random) -> dict:
    kind = rng.randrange(7)
    if kind < 3:
        numbers = rng.sample(range(1, 100), 4)
        if kind == 2:  # exactly one even number
            odds = [n for n in range(1, 100, 2)]
            numbers = rng.sample(odds, 3) + [rng.randrange(2, 100, 2)]
            rng.shuffle(numbers)
            answer = next(i for i, n in enumerate(numbers) if n % 2 == 0)
            question = "Which of these numbers is even?"
        else:
            pick = max if kind == 0 else min
            answer = numbers.index(pick(numbers))
            question = f"Which of these numbers is the {'largest' if kind == 0 else 'smallest'}?"
        options = [str(n) for n in numbers]
    else:
        category = sorted(CATEGORIES)[kind - 3]
        others = [w for c, words in CATEGORIES.items() if c != category for w in words] + FILLERS
        options = rng.sample(others, 3) + [rng.choice(CATEGORIES[category])]
        rng.shuffle(options)
        answer = next(i for i, w in enumerate(options) if w in CATEGORIES[category])
        article = "an" if category[0] in "aeiou" else "a"
        question = f"Which of these words names {article} {category}?"
    return {"question": question, "options": options, "label": answer}


def _mc_example(row: Mapping[str, Any]) -> Example:
    return choice_example({"question": str(row["question"])}, row["options"], int(row["label"]))


# ---------------------------------------------------------------------------- tool calls
TOOLS = [
    {"name": "get_weather", "description": "Get the current weather for a city.",
     "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City name."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit."}},
                    "required": ["city"]}},
    {"name": "convert_currency", "description": "Convert an amount of money from one currency to another.",
     "parameters": {"type": "dict", "properties": {"amount": {"type": "float", "description": "Amount to convert."},
                    "from_currency": {"type": "string", "description": "Three-letter code, e.g. USD."},
                    "to_currency": {"type": "string", "description": "Three-letter code, e.g. EUR."}},
                    "required": ["amount", "from_currency", "to_currency"]}},
    {"name": "set_timer", "description": "Start a countdown timer.",
     "parameters": {"type": "dict", "properties": {"minutes": {"type": "integer", "description": "Length in minutes."},
                    "label": {"type": "string", "description": "Optional name for the timer."}},
                    "required": ["minutes"]}},
]
CITIES = ["Paris", "Tokyo", "Lima", "Cairo", "Oslo", "Toronto", "Nairobi", "Sydney"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]


def _tool_row(rng: random.Random) -> dict:
    kind = rng.randrange(3)
    if kind == 0:
        city, unit = rng.choice(CITIES), rng.choice(["celsius", "fahrenheit", None])
        question = f"What's the weather like in {city} right now" + (f", in {unit}?" if unit else "?")
        truth = {"get_weather": {"city": [city], "unit": [unit] if unit else ["celsius", "fahrenheit", ""]}}
    elif kind == 1:
        amount = rng.choice([10, 25, 40, 99.5, 120, 250, 1000])
        source, target = rng.sample(CURRENCIES, 2)
        question = f"How much is {amount} {source} in {target}?"
        truth = {"convert_currency": {"amount": [amount], "from_currency": [source], "to_currency": [target]}}
    else:
        minutes, label = rng.randint(1, 90), rng.choice(["tea", "laundry", "pasta", None])
        question = f"Set a {minutes}-minute timer" + (f" for the {label}." if label else ".")
        truth = {"set_timer": {"minutes": [minutes], "label": [label] if label else [""]}}
    functions = rng.sample(TOOLS, 2 if rng.random() < 0.5 else 3)
    wanted = next(iter(truth))
    if all(f["name"] != wanted for f in functions):
        functions[0] = next(f for f in TOOLS if f["name"] == wanted)
    return {"question": question, "function": json.dumps(functions), "ground_truth": json.dumps([truth])}


def _tool_example(row: Mapping[str, Any]) -> Example:
    functions = json.loads(row["function"]) if isinstance(row["function"], str) else row["function"]
    truth = json.loads(row["ground_truth"]) if isinstance(row["ground_truth"], str) else row["ground_truth"]
    fields = {"question": str(row["question"]), "functions": json.dumps(functions, indent=2)}
    return Example(fields=fields, gold=json.dumps(truth), target=reference_tool_calls(truth))


def _generator(make_row):
    def generate(n: int, seed: int, split: str, start: int = 0) -> list[dict]:
        """Rows ``start`` to ``start + n - 1`` of the split."""
        rows = []
        for block in range(start // BLOCK, (start + n - 1) // BLOCK + 1 if n > 0 else 0):
            rng = _rng(make_row.__name__, seed, split, block)
            first = block * BLOCK
            for index in range(first, min(first + BLOCK, start + n)):
                row = make_row(rng)
                if index >= start:
                    rows.append(row)
        return rows

    return generate


SYNTHETIC_TASKS = [
    Task(
        name="synth_arith", description="Solve a short arithmetic word problem and give the final number.",
        fields=("question",), required_fields=("question",), columns=("question", "answer"),
        to_example=_arith_example, reward="math_accuracy", answer_cue="answer", max_new_tokens=48,
        generate=_generator(_arith_row),
    ),
    Task(
        name="synth_mc",
        description="Pick the one option of four that answers a simple question about numbers or words.",
        fields=("question", "A", "B", "C", "D", "options"), required_fields=("question",),
        option_sets=(("A", "B", "C", "D"), ("options",)), columns=("question", "options", "label"),
        to_example=_mc_example, reward="mc_accuracy", max_new_tokens=10, top_threshold=0.8,
        generate=_generator(_mc_row), mc_answer_style="text",
    ),
    Task(
        name="synth_tool", description="Call the one function that serves a user request, with the right arguments.",
        fields=("question", "functions"), required_fields=("question", "functions"),
        columns=("question", "function", "ground_truth"), to_example=_tool_example, reward="tool_call_accuracy",
        answer_cue="", max_new_tokens=64, generate=_generator(_tool_row),
    ),
]
