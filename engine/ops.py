"""The closed vocabulary that rule checks are written in.

An expression in a rule file is either a literal (string, number, boolean, null) or a
mapping with exactly one key, the operation, whose value is its operand(s). Each
operation has its Python meaning and its jq text side by side here, so that adding
one touches only this table. Python follows jq's semantics (truthiness, equality,
ordering) so both backends agree on every value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

Subject = dict[str, Any]
Compiled = Callable[[Subject], Any]


def truthy(value: Any) -> bool:
    """jq truthiness: only false and null are false (0 and "" are true)."""
    return value is not None and value is not False


def _rank(value: Any) -> int:
    # jq orders values by type first: null < false < true < numbers < strings < arrays < objects.
    if value is None:
        return 0
    if value is False:
        return 1
    if value is True:
        return 2
    if isinstance(value, (int, float)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, list):
        return 5
    return 6


_PLAIN = (int, float, str)  # types whose Python comparison is jq's, between equals


def jq_cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as jq would order a and b. Facts are scalars, so lists and objects
    are not ordered here."""
    if type(a) is type(b) and type(a) in _PLAIN:
        return (a > b) - (a < b)
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra in (3, 4):
        return (a > b) - (a < b)
    if ra > 4:
        raise TypeError("facts are scalars; lists and objects are not ordered")
    return 0


def jq_eq(a: Any, b: Any) -> bool:
    """jq equality: no bool/int confusion (Python says True == 1)."""
    if type(a) is type(b) and type(a) in _PLAIN:
        return bool(a == b)
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return False
    if ra == 5:
        return len(a) == len(b) and all(jq_eq(x, y) for x, y in zip(a, b))
    if ra == 6:
        return a.keys() == b.keys() and all(jq_eq(a[k], b[k]) for k in a)
    return bool(a == b)


@dataclass(frozen=True)
class Op:
    name: str
    doc: str
    arity: int  # operands; 0 means "a list of one or more"
    py: Callable[..., Any]  # takes the operands' values
    jq: Callable[[list[str]], str]  # takes the operands' jq texts


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("not", "true when the operand is false or null", 1,
           lambda a: not truthy(a), lambda t: f"({t[0]} | not)"),
        Op("all", "true when every operand is true", 0,
           lambda *a: all(truthy(x) for x in a), lambda t: "([" + ", ".join(t) + "] | all)"),
        Op("any", "true when at least one operand is true", 0,
           lambda *a: any(truthy(x) for x in a), lambda t: "([" + ", ".join(t) + "] | any)"),
        Op("eq", "the two operands are equal (no type coercion)", 2,
           jq_eq, lambda t: f"({t[0]} == {t[1]})"),
        Op("ne", "the two operands differ", 2,
           lambda a, b: not jq_eq(a, b), lambda t: f"({t[0]} != {t[1]})"),
        Op("lt", "first < second, in jq's order of values", 2,
           lambda a, b: jq_cmp(a, b) < 0, lambda t: f"({t[0]} < {t[1]})"),
        Op("le", "first <= second", 2,
           lambda a, b: jq_cmp(a, b) <= 0, lambda t: f"({t[0]} <= {t[1]})"),
        Op("gt", "first > second", 2,
           lambda a, b: jq_cmp(a, b) > 0, lambda t: f"({t[0]} > {t[1]})"),
        Op("ge", "first >= second", 2,
           lambda a, b: jq_cmp(a, b) >= 0, lambda t: f"({t[0]} >= {t[1]})"),
        Op("bytes", "the length of a string in UTF-8 bytes (null for other values)", 1,
           lambda a: len(a.encode("utf-8")) if isinstance(a, str) else None,
           lambda t: f"({t[0]} | if type == \"string\" then utf8bytelength else null end)"),
    )
}

# `field` is the one operation whose operand is a name, not an expression.
FIELD = "field"


def expression_schema() -> dict[str, Any]:
    """JSON Schema of an expression, built from the table so they cannot drift."""
    expr = {"$ref": "#/$defs/expr"}
    alternatives: list[dict[str, Any]] = [
        {"type": ["string", "number", "boolean", "null"]},
        {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
         "properties": {FIELD: {"type": "string"}}, "required": [FIELD]},
    ]
    for op in OPS.values():
        operand = (expr if op.arity == 1 else
                   {"type": "array", "items": expr, "minItems": op.arity or 1,
                    **({"maxItems": op.arity} if op.arity else {})})
        alternatives.append({"type": "object", "additionalProperties": False,
                             "properties": {op.name: operand}, "required": [op.name]})
    return {"oneOf": alternatives}


def fields_used(expr: Any) -> list[str]:
    """Every fact name an expression reads, in order."""
    if not isinstance(expr, dict):
        return []
    (name, arg), = expr.items()
    if name == FIELD:
        return [arg]
    operands = [arg] if OPS[name].arity == 1 else arg
    return [f for e in operands for f in fields_used(e)]


def compile_py(expr: Any) -> Compiled:
    """A function of the subject's facts. Expressions are assumed schema-valid."""
    if not isinstance(expr, dict):
        return lambda _s: expr
    (name, arg), = expr.items()
    if name == FIELD:
        return lambda s: s.get(arg)
    op = OPS[name]
    if name == "not" and isinstance(arg, dict) and FIELD in arg:  # the most common check
        key = arg[FIELD]
        return lambda s: not truthy(s.get(key))
    parts = [compile_py(e) for e in ([arg] if op.arity == 1 else arg)]
    fn = op.py
    # Specialized by operand count: this runs once per subject and rule, the hot path.
    if len(parts) == 1:
        (first,) = parts
        return lambda s: fn(first(s))
    if len(parts) == 2:
        first, second = parts
        return lambda s: fn(first(s), second(s))
    return lambda s: fn(*[p(s) for p in parts])


def compile_jq(expr: Any) -> str:
    """jq text of the expression, applied to the subject as `.`. Literals become JSON
    text, which jq reads as the same literal."""
    if not isinstance(expr, dict):
        return json.dumps(expr)
    (name, arg), = expr.items()
    if name == FIELD:
        return f".[{json.dumps(arg)}]"
    op = OPS[name]
    return op.jq([compile_jq(e) for e in ([arg] if op.arity == 1 else arg)])
