"""A tiny, safe numeric reader for closed-form LaTeX constants (`3\\sqrt{13}`, `-\\frac{\\pi}{6}`, `6+9i`).

It lets `math_accuracy` reject clearly wrong answers without sympy: if gold and prediction both evaluate to
numbers that differ by more than a relative 1e-4, no symbolic check can make them equal. Anything outside the
small grammar below (variables, sets, intervals, huge powers) gives `None` and goes to math-verify.
"""

import ast
import cmath
import re

_COMMANDS = [
    (re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)"), r"((\1)/(\2))"),  # \frac12
    (re.compile(r"\\[dt]?frac"), "FRAC"),
    (re.compile(r"\\sqrt\s*(\d)"), r"sqrt(\1)"),  # \sqrt2
    (re.compile(r"\\sqrt"), "sqrt"),
    (re.compile(r"\\pi"), "pi"),
    (re.compile(r"\\(?:cdot|times)"), "*"),
    (re.compile(r"\\left|\\right|\\!|\\,|\\;|\s+"), ""),
]
_ALLOWED = re.compile(r"[0-9.+\-*/^(){}a-zA-Z]*")
_IMPLICIT = re.compile(r"(?<=[0-9)i])(?=[(a-zA-Z])|(?<=[)])(?=[0-9])")
_NAMES = {"pi": cmath.pi, "i": 1j}


def _to_python(latex: str) -> str | None:
    text = latex
    for pattern, repl in _COMMANDS:
        text = pattern.sub(repl, text)
    if not _ALLOWED.fullmatch(text) or len(text) > 200:
        return None
    # FRAC{a}{b} -> ((a)/(b)); braces elsewhere are grouping.
    text = re.sub(r"FRAC", "", text).replace("}{", ")/(").replace("{", "(").replace("}", ")")
    text = text.replace("^", "**")
    return _IMPLICIT.sub("*", text)


def _eval(node: ast.AST) -> complex:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return complex(node.value)
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return complex(_NAMES[node.id])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt"
            and len(node.args) == 1):
        return cmath.sqrt(_eval(node.args[0]))
    if isinstance(node, ast.BinOp):
        return _binop(node)
    raise ValueError("outside the numeric grammar")


def _binop(node: ast.BinOp) -> complex:
    left, right = _eval(node.left), _eval(node.right)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if isinstance(node.op, ast.Div):
        return left / right
    if isinstance(node.op, ast.Pow) and abs(right) <= 64 and abs(left) <= 1e6:
        return left**right
    raise ValueError("outside the numeric grammar")


def evaluate(latex: str) -> complex | None:
    """Value of a closed-form LaTeX constant, or `None` if it is not one (or not finite)."""
    python = _to_python(latex)
    if not python:
        return None
    try:
        value = _eval(ast.parse(python, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return None
    finite = cmath.isfinite(value)
    return value if finite else None


_TUPLE = re.compile(r"\s*(?:\\left)?\s*([(\[])(.*)(?:\\right)?\s*([)\]])\s*", re.DOTALL)


def _elements(text: str) -> tuple[str, list[str]] | None:
    """`("()", [a, b])` for a bracketed tuple or interval of two or more parts, else `None`."""
    match = _TUPLE.fullmatch(text)
    if not match or "\\{" in text:
        return None
    inner = re.sub(r"\\right\s*$", "", match.group(2))
    parts = inner.split(",")
    if len(parts) < 2 or any(p.count("(") != p.count(")") or p.count("{") != p.count("}") for p in parts):
        return None
    return match.group(1) + match.group(3), parts


def _scalars_differ(gold: str, pred: str) -> bool:
    a, b = evaluate(gold), evaluate(pred)
    if a is None or b is None:
        return False
    return abs(a - b) > 1e-4 * max(1.0, abs(a))


def clearly_different(gold: str, pred: str) -> bool:
    """`True` only when no symbolic check could make the two equal: closed-form constants whose values differ
    by more than a relative 1e-4, a tuple against a constant, or same-shaped tuples with such a component."""
    gold_parts, pred_parts = _elements(gold), _elements(pred)
    if gold_parts is None and pred_parts is None:
        return _scalars_differ(gold, pred)
    if gold_parts is None or pred_parts is None:
        scalar = gold if gold_parts is None else pred
        return evaluate(scalar) is not None
    (gold_brackets, gold_items), (pred_brackets, pred_items) = gold_parts, pred_parts
    if gold_brackets != pred_brackets or len(gold_items) != len(pred_items):
        return False
    return any(_scalars_differ(g, p) for g, p in zip(gold_items, pred_items))
