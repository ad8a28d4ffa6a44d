"""Tool-use rewards: parse the calls a completion makes and compare them with BFCL-style ground truth.

Calls are read from JSON (an object or a list; `{"name", "arguments"}`, OpenAI's `{"function": {...}}` or
BFCL's `{"func": {args}}`), from `<tool_call>...</tool_call>` tags, from Python call syntax
(`[f(a=1), g(b="x")]`), and from the `tool_calls` field of a conversational message.

The gold is BFCL's `possible_answer` `ground_truth`: `[{"func": {"param": [acceptable values...]}}]`, where
`""` among the values means the parameter may be left out; `[]` means no call should be made. Calls are
matched in any order (parallel calls). Scores follow ToolRL's split into format, name and argument credit;
the overall reward is their mean, so it is `1.0` exactly when the calls are right.
"""

import ast
import json
import math
import re
from dataclasses import dataclass
from itertools import permutations
from typing import Any

from ._common import (
    MAX_CHARS,
    batch_size,
    column,
    completion_text,
    last_assistant_message,
    report,
    safe_item,
    with_extract,
)
from .metrics import count_failure

_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|python|tool_code|py)?\s*(.*?)```", re.DOTALL)
# Parsing Python or JSON is not linear-time in nesting depth; longer candidates are not tool calls anyway.
_MAX_CANDIDATE = 20_000
_MAX_SCANS = 64


# ------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------


def _call_from_object(obj: Any) -> dict | None:
    """One call from a decoded JSON object in any of the accepted shapes."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if isinstance(name, str):
        args = obj.get("arguments", obj.get("parameters", {}))
        if isinstance(args, str):
            args = _loads(args)
        return {"name": name, "arguments": args} if isinstance(args, dict) else None
    if len(obj) == 1:
        (name, args), = obj.items()
        if isinstance(args, dict):
            return {"name": str(name), "arguments": args}
    return None


def _calls_from_json(value: Any) -> list[dict] | None:
    items = value if isinstance(value, list) else [value]
    calls = [_call_from_object(item) for item in items]
    return calls if calls and all(calls) else ([] if value == [] else None)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _literal(node: ast.AST) -> Any:
    return ast.literal_eval(node)


def _calls_from_python(text: str) -> list[dict] | None:
    """Calls from Python syntax: `f(a=1)` or `[f(a=1), g(b="x")]`; keyword arguments only (as BFCL)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = ast.unparse(node.func)
        try:
            args = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None
        calls.append({"name": name, "arguments": args})
    return calls or None


def _parse_block(text: str) -> list[dict] | None:
    text = text.strip()
    if not text or len(text) > _MAX_CANDIDATE:
        return None
    if text[0] in "[{":
        decoded = _loads(text)
        if decoded is not None:
            return _calls_from_json(decoded)
    return _calls_from_python(text)


def _scan_json(text: str) -> list[dict] | None:
    """The first JSON object or list embedded in prose that reads as calls."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:_MAX_SCANS]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text[start : start + _MAX_CANDIDATE])
        except (ValueError, RecursionError):
            continue
        calls = _calls_from_json(value)
        if calls:
            return calls
    return None


def _from_message_field(completion: Any) -> list[dict] | None:
    message = last_assistant_message(completion) if not isinstance(completion, str) else None
    raw = message.get("tool_calls") if message else None
    if not isinstance(raw, list) or not raw:
        return None
    calls = [_call_from_object(c) for c in raw]
    return calls if all(calls) else None


def parse_tool_calls(text: Any) -> list[dict] | None:
    """Return the tool calls in a completion as `[{"name": str, "arguments": dict}]`, or `None` if it has none.

    An explicit empty JSON list (`[]`) gives `[]`.

    Args:
        text (`str` or conversation):
            Completion text, or a conversational completion (its `tool_calls` field is read first).
    """
    from_field = _from_message_field(text)
    if from_field:
        return from_field
    text = completion_text(text)
    if not text.strip():
        return None
    tagged = _TAG.findall(text)
    if tagged:
        calls = [_parse_block(block) for block in tagged]
        found = [c for group in calls if group for c in group]
        return found or None
    for candidate in [text] + _FENCE.findall(text) + text.splitlines()[-5:][::-1]:
        calls = _parse_block(candidate)
        if calls is not None:
            return calls
    return _scan_json(text[:MAX_CHARS])


# ------------------------------------------------------------------------------------------------------------
# Gold and value matching
# ------------------------------------------------------------------------------------------------------------


def parse_gold_calls(gold: Any) -> list[dict] | None:
    """Read BFCL ground truth (JSON text or list) into `[{"name": str, "params": {param: [values]}}]`."""
    if isinstance(gold, str):
        gold = _loads(gold)
    if isinstance(gold, dict):
        gold = [gold]
    if not isinstance(gold, list):
        return None
    calls = []
    for item in gold:
        if not isinstance(item, dict) or len(item) != 1:
            return None
        (name, params), = item.items()
        if not isinstance(params, dict):
            return None
        calls.append({"name": str(name), "params": {k: v if isinstance(v, list) else [v] for k, v in params.items()}})
    return calls


def _fold(text: str) -> str:
    # Case and spacing never change what a string argument means; nor do these punctuation marks.
    return re.sub(r"[\s,./\-_*^'\"]+", "", text.lower())


def values_match(pred: Any, gold: Any) -> bool:
    """Type-aware equality: numbers by value (int and float mix), strings case/space-folded, lists and dicts
    element by element."""
    if isinstance(gold, bool) or isinstance(pred, bool):
        return isinstance(gold, bool) and isinstance(pred, bool) and gold == pred
    if isinstance(gold, (int, float)) and isinstance(pred, (int, float)):
        return math.isclose(float(gold), float(pred), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(gold, str) and isinstance(pred, str):
        return _fold(gold) == _fold(pred)
    if isinstance(gold, (list, tuple)) and isinstance(pred, (list, tuple)):
        return len(gold) == len(pred) and all(values_match(p, g) for p, g in zip(pred, gold))
    if isinstance(gold, dict) and isinstance(pred, dict):
        return _dict_match(pred, gold)
    return pred == gold


def _dict_match(pred: dict, gold: dict) -> bool:
    # BFCL writes nested dict values with lists of acceptable values too.
    for key, accepted in gold.items():
        accepted = accepted if isinstance(accepted, list) else [accepted]
        if not accepted:
            if pred.get(key, []) != []:
                return False
            continue
        if key not in pred:
            if "" not in accepted:
                return False
            continue
        if not any(values_match(pred[key], a) for a in accepted if a != ""):
            return False
    return set(pred) <= set(gold)


def _accepts(value: Any, accepted: list) -> bool:
    # `[[1, 2]]` lists one acceptable list value; never read it as "1 or 2".
    return any(values_match(value, a) for a in accepted if not (isinstance(a, str) and a == ""))


def argument_score(pred_args: dict, gold_params: dict) -> float:
    """Share of parameters handled right: required ones present and correct, optional ones absent or correct,
    and no parameter the gold does not know."""
    keys = set(gold_params) | set(pred_args)
    if not keys:
        return 1.0
    right = 0
    for key in keys:
        accepted = gold_params.get(key)
        if accepted is None:
            continue  # an unknown parameter is wrong
        if not accepted:  # BFCL writes `[]` for a parameter it does not constrain: omit it, or pass `[]`
            right += key not in pred_args or pred_args[key] == []
        elif key not in pred_args:
            right += "" in accepted
        else:
            right += _accepts(pred_args[key], accepted)
    return right / len(keys)


# ------------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolScore:
    """Credit for one completion: format, name and argument components in [0, 1], and whether it is exact."""

    format: float
    name: float
    arguments: float

    @property
    def overall(self) -> float:
        return (self.format + self.name + self.arguments) / 3

    @property
    def exact(self) -> bool:
        return self.overall == 1.0


def _best_pairing(preds: list[dict], golds: list[dict]) -> tuple[float, float]:
    """Match predicted to gold calls in any order; return summed (name, argument) credit of the best match."""
    def pair(p: dict, g: dict) -> tuple[float, float]:
        if p["name"] != g["name"]:
            return 0.0, 0.0
        return 1.0, argument_score(p["arguments"], g["params"])

    small, large, flip = (preds, golds, False) if len(preds) <= len(golds) else (golds, preds, True)
    if len(large) > 7:  # permutations explode; greedy is fine for the rare huge case
        return _greedy(preds, golds, pair)
    best = (0.0, 0.0)
    for order in permutations(range(len(large)), len(small)):
        scores = [pair(*((large[j], s) if flip else (s, large[j]))) for s, j in zip(small, order)]
        total = (sum(s[0] for s in scores), sum(s[1] for s in scores))
        best = max(best, total, key=lambda t: (t[0] + t[1], t[0]))
    return best


def _greedy(preds, golds, pair) -> tuple[float, float]:
    used, name, args = set(), 0.0, 0.0
    for p in preds:
        options = [(sum(pair(p, g)), j) for j, g in enumerate(golds) if j not in used]
        if options:
            _, j = max(options)
            used.add(j)
            n, a = pair(p, golds[j])
            name, args = name + n, args + a
    return name, args


def score_tool_calls(completion: Any, gold: Any) -> ToolScore | None:
    """Score one completion's tool calls against BFCL ground truth; `None` if the gold cannot be read."""
    golds = parse_gold_calls(gold)
    if golds is None:
        count_failure("tool_call_accuracy/gold")
        return None
    preds = parse_tool_calls(completion)
    if not golds:  # irrelevance: the right move is not to call anything
        ok = float(not preds)
        return ToolScore(ok, ok, ok)
    if not preds:
        count_failure("tool_call_accuracy")
        return ToolScore(0.0, 0.0, 0.0)
    name, args = _best_pairing(preds, golds)
    total = max(len(preds), len(golds))  # missing and extra calls both cost credit
    return ToolScore(1.0, name / total, args / total)


def _component(completion: Any, gold: Any, part: str) -> float | None:
    score = score_tool_calls(completion, gold)
    return None if score is None else getattr(score, part)


def _tool_batch(name: str, part: str, completions: Any, gold: Any, kwargs: dict) -> list[float | None]:
    n = batch_size(completions)
    completions = completions if isinstance(completions, (list, tuple)) else [completions]
    golds = column(gold, n)
    scores = [safe_item(name, _component, c, g, part) for c, g in zip(completions, golds)]
    # Unparsed: no calls where calls were due (`_calls_made`), not wrong ones.
    report(kwargs, name, scores, sum(1 for c, g, s in zip(completions, golds, scores)
                                     if s is not None and _calls_made(c, g) is None))
    return scores


def tool_call_accuracy(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """Overall tool-call reward in [0, 1]: mean of format, name and argument credit (1.0 only when exact).

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions; a conversational message's `tool_calls` field is read too.
        gold (`list[str | list]`):
            BFCL `ground_truth` per row, as JSON text or already parsed.
    """
    return _tool_batch("tool_call_accuracy", "overall", completions, gold, kwargs)


def tool_call_format(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """`1.0` when the completion contains well-formed tool calls (or, for irrelevance rows, none)."""
    return _tool_batch("tool_call_format", "format", completions, gold, kwargs)


def tool_call_name(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """Share of expected calls made with the right function name (extra calls lower it)."""
    return _tool_batch("tool_call_name", "name", completions, gold, kwargs)


def tool_call_arguments(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """Argument credit averaged over expected calls (missing and extra calls lower it)."""
    return _tool_batch("tool_call_arguments", "arguments", completions, gold, kwargs)


def _calls_made(completion: Any, gold: Any = None, **row: Any) -> list[dict] | None:
    """The calls a completion makes, `None` without any; where the gold asks for none (irrelevance), making none
    is the answer `[]`."""
    calls = parse_tool_calls(completion)
    return calls if calls else ([] if parse_gold_calls(gold) == [] else None)


for _reward in (tool_call_accuracy, tool_call_format, tool_call_name, tool_call_arguments):
    with_extract(_reward, _calls_made)
