"""Table-driven tests for the tool-use rewards, plus agreement with BFCL's possible_answer files."""

import json
import random

import pytest

import rewards
from rewards import tools

AREA = [{"area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
WEATHER = [{"weather": {"city": ["Paris", "Paris, France"], "days": [3, ""]}}]
PARALLEL = [{"area": {"base": [10], "height": [5]}}, {"area": {"base": [4], "height": [2]}}]
MULTI = [{"area": {"base": [1], "height": [2]}}, {"weather": {"city": ["Rome"]}}]
LISTS = [{"sort": {"items": [[3, 1, 2]], "reverse": [False, ""]}}]
NESTED = [{"book": {"guest": [{"name": ["Ann"], "age": [30, ""]}]}}]

# (completion, gold, expected (format, name, arguments))
CASES = [
    ('area(base=10, height=5)', AREA, (1, 1, 1)),
    ('area(base=10, height=5, unit="units")', AREA, (1, 1, 1)),
    ('area(base=10, height=5, unit="UNITS ")', AREA, (1, 1, 1)),
    ('area(base=10.0, height=5)', AREA, (1, 1, 1)),
    ('[area(base=10, height=5)]', AREA, (1, 1, 1)),
    ('{"name": "area", "arguments": {"base": 10, "height": 5}}', AREA, (1, 1, 1)),
    ('[{"name": "area", "arguments": {"base": 10, "height": 5}}]', AREA, (1, 1, 1)),
    ('{"name": "area", "parameters": {"base": 10, "height": 5}}', AREA, (1, 1, 1)),
    ('{"function": {"name": "area", "arguments": "{\\"base\\": 10, \\"height\\": 5}"}}', AREA, (1, 1, 1)),
    ('{"area": {"base": 10, "height": 5}}', AREA, (1, 1, 1)),
    ('<tool_call>{"name": "area", "arguments": {"base": 10, "height": 5}}</tool_call>', AREA, (1, 1, 1)),
    ('<tool_call>\narea(base=10, height=5)\n</tool_call>', AREA, (1, 1, 1)),
    ('Sure! ```json\n{"name": "area", "arguments": {"base": 10, "height": 5}}\n```', AREA, (1, 1, 1)),
    ('I will call {"name": "area", "arguments": {"base": 10, "height": 5}} now.', AREA, (1, 1, 1)),
    ('Let me compute.\narea(base=10, height=5)', AREA, (1, 1, 1)),
    ('weather(city="paris")', WEATHER, (1, 1, 1)),
    ('weather(city="Paris, France", days=3)', WEATHER, (1, 1, 1)),
    ('[area(base=4, height=2), area(base=10, height=5)]', PARALLEL, (1, 1, 1)),
    ('<tool_call>{"name": "area", "arguments": {"base": 10, "height": 5}}</tool_call>\n'
     '<tool_call>{"name": "area", "arguments": {"base": 4, "height": 2}}</tool_call>', PARALLEL, (1, 1, 1)),
    ('[weather(city="Rome"), area(base=1, height=2)]', MULTI, (1, 1, 1)),
    ('sort(items=[3, 1, 2])', LISTS, (1, 1, 1)),
    ('book(guest={"name": "ann"})', NESTED, (1, 1, 1)),
    ('I cannot help with that.', [], (1, 1, 1)),
    ('', [], (1, 1, 1)),
    # partial credit
    ('area(base=10, height=6)', AREA, (1, 1, 2 / 3)),
    ('area(base=10)', AREA, (1, 1, 2 / 3)),
    ('area(base=10, height=5, colour="red")', AREA, (1, 1, 3 / 4)),
    ('area(base="10", height=5)', AREA, (1, 1, 2 / 3)),
    ('weather(city="London")', WEATHER, (1, 1, 1 / 2)),
    ('weather(city="Paris", days=4)', WEATHER, (1, 1, 1 / 2)),
    ('sort(items=[1, 2, 3])', LISTS, (1, 1, 1 / 2)),
    ('sort(items=[3, 1, 2], reverse=True)', LISTS, (1, 1, 1 / 2)),
    ('[area(base=10, height=5)]', PARALLEL, (1, 1 / 2, 1 / 2)),
    ('[area(base=10, height=5), area(base=10, height=5)]', PARALLEL, (1, 1, 1 / 2)),
    ('[area(base=10, height=5), area(base=4, height=2), area(base=1, height=1)]', PARALLEL, (1, 2 / 3, 2 / 3)),
    ('volume(base=10, height=5)', AREA, (1, 0, 0)),
    ('area(base=10, height=5)', [], (0, 0, 0)),
    # malformed
    ('area(10, 5)', AREA, (0, 0, 0)),
    ('{"name": "area", "arguments": {"base": 10', AREA, (0, 0, 0)),
    ('<tool_call>not json</tool_call>', AREA, (0, 0, 0)),
    ('no call at all', AREA, (0, 0, 0)),
    ('', AREA, (0, 0, 0)),
    (None, AREA, (0, 0, 0)),
    (123, AREA, (0, 0, 0)),
    ('{"name": 5, "arguments": {}}', AREA, (0, 0, 0)),
    ('[' * 5000 + ']' * 5000, AREA, (0, 0, 0)),
    ('f(' * 3000, AREA, (0, 0, 0)),
    ([{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "area", "arguments": '{"base": 10, "height": 5}'}}]}],
     AREA, (1, 1, 1)),
]


@pytest.mark.parametrize("completion,gold,expected", CASES)
def test_tool_rewards_table(completion, gold, expected):
    fmt, name, args = expected
    for gold_cell in (gold, json.dumps(gold)):
        assert rewards.tool_call_format(None, [completion], [gold_cell]) == [pytest.approx(fmt)]
        assert rewards.tool_call_name(None, [completion], [gold_cell]) == [pytest.approx(name)]
        assert rewards.tool_call_arguments(None, [completion], [gold_cell]) == [pytest.approx(args)]
        overall = rewards.tool_call_accuracy(None, [completion], [gold_cell])[0]
        assert overall == pytest.approx((fmt + name + args) / 3)


@pytest.mark.parametrize("gold", ["", "not json", "{\"a\": 1}", "[1, 2]", None, 42])
def test_unreadable_gold_is_not_applicable(gold):
    assert rewards.tool_call_accuracy(None, ["area(base=1)"], [gold]) == [None]


def test_parse_tool_calls_shapes():
    assert tools.parse_tool_calls('math.factorial(n=5)') == [{"name": "math.factorial", "arguments": {"n": 5}}]
    assert tools.parse_tool_calls("[]") == []
    assert tools.parse_tool_calls("hello") is None


# ------------------------------------------------------------------------------------------------------------
# BFCL: completions written from possible_answer must agree with it (shared data: see conftest.shared_path)
# ------------------------------------------------------------------------------------------------------------

CATEGORIES = ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple"]


def _answers(category: str, shared_file) -> list[dict]:
    path = shared_file(f"bfcl/possible_answer/BFCL_v4_{category}.json")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _first_value(value):
    # BFCL nests acceptable-value lists inside dict values: a model writes one concrete value for each key.
    if isinstance(value, dict):
        return {k: _first_value(v[0]) for k, v in value.items() if v and v[0] != ""}
    if isinstance(value, list):
        return [_first_value(v) for v in value]
    return value


def _call_text(truth: list[dict], style: str) -> str:
    calls = []
    for call in truth:
        (name, params), = call.items()
        args = {k: _first_value(v[0]) for k, v in params.items() if v and v[0] != ""}
        calls.append((name, args))
    if style == "python":
        return "[" + ", ".join(f"{n}({', '.join(f'{k}={v!r}' for k, v in a.items())})" for n, a in calls) + "]"
    if style == "tags":
        return "\n".join(f"<tool_call>{json.dumps({'name': n, 'arguments': a})}</tool_call>" for n, a in calls)
    return json.dumps([{"name": n, "arguments": a} for n, a in reversed(calls)])


def _corrupt(truth: list[dict], rng: random.Random) -> list[dict] | None:
    truth = json.loads(json.dumps(truth))
    call = rng.choice(truth)
    (name, params), = call.items()
    required = [k for k, v in params.items() if "" not in v and v]
    if not required:
        return None
    key = rng.choice(required)
    params[key] = ["__wrong__" if not isinstance(params[key][0], str) else params[key][0] + "_x"]
    if isinstance(params[key][0], str) and params[key][0].startswith("__"):
        params[key] = [12345.678]
    return truth


@pytest.mark.parametrize("category", CATEGORIES)
def test_bfcl_possible_answers_agree(category, shared_file):
    rng = random.Random(0)
    rows = _answers(category, shared_file)
    for i, row in enumerate(rows):
        truth = row["ground_truth"]
        style = ["python", "tags", "json"][i % 3]
        right = _call_text(truth, style)
        assert tools.score_tool_calls(right, json.dumps(truth)).exact, (row["id"], right)
        wrong_truth = _corrupt(truth, rng)
        if wrong_truth is not None:
            wrong = _call_text(wrong_truth, style)
            assert not tools.score_tool_calls(wrong, truth).exact, (row["id"], wrong)


def test_bfcl_irrelevance_rows(shared_file):
    path = shared_file("bfcl/BFCL_v4_irrelevance.json")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:50] if line.strip()]
    for row in rows:
        fn = row["function"][0]["name"]
        assert rewards.tool_call_accuracy(None, ["I can't do that with these tools."], [[]]) == [1.0]
        assert rewards.tool_call_accuracy(None, [f"{fn}()"], [[]]) == [0.0]
