"""The closed vocabulary that rule checks are written in.

An expression in a rule file is either a literal (string, number, boolean, null) or a
mapping with exactly one key, the operation, whose value is its operand(s). Each
operation has its Python text and its jq text side by side here, so that adding one
touches only this table; the Python engine compiles a rule set into plain Python
functions from these texts (engine/pybackend.py). Python follows jq's semantics
(truthiness, equality, ordering) so both backends agree on every value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

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


# The JSON types that facts and literals have. An integer is also a number.
Types = frozenset[str]
BOOLEAN, INTEGER, NUMBER, STRING, NULL = "boolean", "integer", "number", "string", "null"
CONDITION: Types = frozenset({BOOLEAN, NULL})  # what jq's truthiness can judge sensibly


def type_of(value: Any) -> str:
    """The JSON type of a literal as YAML gives it (0.10 is a number, "0.10" a string)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    return STRING


def describe(types: Types) -> str:
    """'integer or null', for messages and docs."""
    order = (BOOLEAN, INTEGER, NUMBER, STRING, NULL)
    return " or ".join(t for t in order if t in types)


def _numbers(types: Types) -> Types:
    """Integers count as numbers when two types are compared."""
    return frozenset(NUMBER if t == INTEGER else t for t in types)


@dataclass(frozen=True)
class Op:
    """An operation of the rule vocabulary: its typing, its Python and its jq."""

    name: str
    doc: str
    arity: int  # operands; 0 means "a list of one or more"
    takes: str  # how operands are typed: "condition", "equal", "order" or "string"
    gives: Types  # the types of its result
    # Python and jq texts of the operation, from its operands' texts. The Python text
    # also gets the operands' types (what their values can be), so that it can be plain
    # Python where that means what jq means; it may call the helpers of PY_HELPERS, and
    # evaluates each operand at most once.
    py: Callable[[list[str], list[Types]], str]
    jq: Callable[[list[str]], str]


def utf8_bytes(value: Any) -> Any:
    return len(value.encode("utf-8")) if isinstance(value, str) else None


# The names that the Python texts of operations (and of facts) may call.
PY_HELPERS: dict[str, Any] = {"truthy": truthy, "jq_eq": jq_eq, "jq_cmp": jq_cmp,
                              "utf8_bytes": utf8_bytes}

_BOOL = frozenset({BOOLEAN})
ANY: Types = frozenset({BOOLEAN, INTEGER, NUMBER, STRING, NULL})  # an operand of unknown type
_NUMERIC = frozenset({INTEGER, NUMBER})


def _true(text: str, types: Types) -> str:
    """Python text that is True where jq's truthiness says true, else False."""
    if types <= _BOOL:
        return text
    return f"({text} is True)" if types <= CONDITION else f"truthy({text})"


def _same(ta: Types, tb: Types) -> bool:
    """Python's == is jq's on these: unless a boolean may meet a number (True == 1)."""
    return not ((BOOLEAN in ta and tb & _NUMERIC) or (BOOLEAN in tb and ta & _NUMERIC))


def _ordered(ta: Types, tb: Types) -> bool:
    """Python's < is jq's on these: numbers with numbers, strings with strings."""
    return (ta | tb) <= _NUMERIC or (ta | tb) <= {STRING}


def _eq(t: list[str], ty: list[Types]) -> str:
    return f"({t[0]} == {t[1]})" if _same(*ty) else f"jq_eq({t[0]}, {t[1]})"


def _ne(t: list[str], ty: list[Types]) -> str:
    return f"({t[0]} != {t[1]})" if _same(*ty) else f"(not jq_eq({t[0]}, {t[1]}))"


def _cmp(sign: str) -> Callable[[list[str], list[Types]], str]:
    return lambda t, ty: (f"({t[0]} {sign} {t[1]})" if _ordered(*ty)
                          else f"(jq_cmp({t[0]}, {t[1]}) {sign} 0)")


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("not", "true when the operand is false or null", 1, "condition", _BOOL,
           lambda t, ty: f"(not {_true(t[0], ty[0])})", lambda t: f"(if {t[0]} then false else true end)"),
        # Python's and jq's `and`/`or` both stop at the first operand that decides (facts
        # after it are not computed); jq's judge truthiness as all/any do.
        Op("all", "true when every operand is true", 0, "condition", _BOOL,
           lambda t, ty: "(" + " and ".join(map(_true, t, ty)) + ")",
           lambda t: "(" + " and ".join(t if len(t) > 1 else [*t, "true"]) + ")"),
        Op("any", "true when at least one operand is true", 0, "condition", _BOOL,
           lambda t, ty: "(" + " or ".join(map(_true, t, ty)) + ")",
           lambda t: "(" + " or ".join(t if len(t) > 1 else [*t, "false"]) + ")"),
        Op("eq", "the two operands are equal (no type coercion)", 2, "equal", _BOOL,
           _eq, lambda t: f"({t[0]} == {t[1]})"),
        Op("ne", "the two operands differ", 2, "equal", _BOOL,
           _ne, lambda t: f"({t[0]} != {t[1]})"),
        Op("lt", "first < second, in jq's order of values", 2, "order", _BOOL,
           _cmp("<"), lambda t: f"({t[0]} < {t[1]})"),
        Op("le", "first <= second", 2, "order", _BOOL,
           _cmp("<="), lambda t: f"({t[0]} <= {t[1]})"),
        Op("gt", "first > second", 2, "order", _BOOL,
           _cmp(">"), lambda t: f"({t[0]} > {t[1]})"),
        Op("ge", "first >= second", 2, "order", _BOOL,
           _cmp(">="), lambda t: f"({t[0]} >= {t[1]})"),
        Op("bytes", "the length of a string in UTF-8 bytes (null for other values)", 1, "string",
           frozenset({INTEGER, NULL}),
           lambda t, ty: f"len({t[0]}.encode('utf-8'))" if ty[0] <= {STRING} else f"utf8_bytes({t[0]})",
           lambda t: f"({t[0]} | if type == \"string\" then utf8bytelength else null end)"),
    )
}

# `field` is the one operation whose operand is a name, not an expression.
FIELD = "field"


class ExprError(ValueError):
    """A malformed or ill-typed expression; `path` leads to the part at fault."""

    def __init__(self, path: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def _what(expr: Any) -> str:
    if isinstance(expr, dict) and FIELD in expr:
        return f"fact '{expr[FIELD]}'"
    if isinstance(expr, dict):
        return f"the '{next(iter(expr))}' expression"
    return f"the literal {json.dumps(expr)}"


def typecheck(expr: Any, facts: Mapping[str, Types], subject: str, path: tuple[Any, ...] = ()) -> Types:
    """The types `expr` can take, once it is known to be well formed, to read only facts
    of `subject` (`facts`: name -> types), and to give each operation operands it can
    work with: a comparison that can never hold, or a string used as a condition, is a
    mistake in the rule, not a rule that never fires. Raises ExprError."""
    if expr is None or isinstance(expr, (bool, int, float, str)):
        return frozenset({type_of(expr)})
    if not isinstance(expr, dict):
        raise ExprError(path, "expected a literal (string, number, boolean, null) or an operation "
                              f"{{NAME: OPERANDS}}, got {'a list' if isinstance(expr, list) else type(expr).__name__}")
    if len(expr) != 1:
        raise ExprError(path, f"an operation is a mapping with one key, got {len(expr)} keys "
                              f"({', '.join(map(str, expr)) or 'none'})")
    (name, arg), = expr.items()
    if name == FIELD:
        if not isinstance(arg, str):
            raise ExprError(path + (FIELD,), "'field' takes the name of a fact")
        if arg not in facts:
            raise ExprError(path + (FIELD,), f"unknown fact '{arg}' for subject '{subject}' "
                                             f"(known: {', '.join(facts)})")
        return facts[arg]
    op = OPS.get(name)
    if op is None:
        raise ExprError(path, f"unknown operation '{name}' (known: {', '.join([FIELD, *OPS])})")
    if op.arity == 1:
        operands, paths = [arg], [path + (name,)]
    elif not isinstance(arg, list) or len(arg) < 1 or (op.arity and len(arg) != op.arity):
        wanted = f"a list of {op.arity} operands" if op.arity else "a list of one or more operands"
        got = f"{len(arg)}" if isinstance(arg, list) else "no list"
        raise ExprError(path + (name,), f"'{name}' takes {wanted}, got {got}")
    else:
        operands, paths = arg, [path + (name, i) for i in range(len(arg))]
    types = [typecheck(e, facts, subject, p) for e, p in zip(operands, paths)]
    _operands_fit(op, operands, types, paths)
    return op.gives


def _operands_fit(op: Op, operands: list[Any], types: list[Types], paths: list[tuple[Any, ...]]) -> None:
    if op.takes == "condition":
        for e, t, p in zip(operands, types, paths):
            expect_condition(e, t, p, f"'{op.name}' needs")
    elif op.takes == "string":
        if STRING not in types[0]:
            raise ExprError(paths[0], f"'{op.name}' measures a string, but {_what(operands[0])} "
                                      f"is {describe(types[0])}")
    else:
        (a, b), (ta, tb) = operands, types
        where = paths[0][:-1]
        if op.takes == "order":
            values = (_numbers(ta) | _numbers(tb)) - {NULL}
            if not (values <= {NUMBER} or values <= {STRING}):
                raise ExprError(where, f"'{op.name}' orders {_what(a)} ({describe(ta)}) and "
                                       f"{_what(b)} ({describe(tb)}): compare numbers with "
                                       f"numbers or strings with strings")
        elif not _numbers(ta) & _numbers(tb):
            raise ExprError(where, f"'{op.name}' compares {_what(a)} ({describe(ta)}) with "
                                   f"{_what(b)} ({describe(tb)}): they are never equal")


def expect_condition(expr: Any, types: Types, path: tuple[Any, ...], needs: str = "must be") -> None:
    """`expr` must be true or false: any other value is always "true" in jq."""
    if not types <= CONDITION:
        raise ExprError(path, f"{needs} a condition (true or false), but {_what(expr)} is "
                              f"{describe(types)}")


def expect_layer(expr: Any, types: Types, path: tuple[Any, ...]) -> None:
    """`expr` must be a layer index, in every case."""
    if types != {INTEGER}:
        raise ExprError(path, f"must be a layer index (integer), but {_what(expr)} is {describe(types)}")


def py_literal(value: Any) -> str:
    """Python text of a literal from a rules file. Only repr() of plain values turns
    rules-file text into code: their repr() is their literal."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"  # inf, -inf, nan
    assert value is None or isinstance(value, (bool, int, float, str)), value
    return repr(value)


def py_text(expr: Any, field: Callable[[str], str],
            facts: Optional[Mapping[str, Types]] = None) -> str:
    """Python text of the expression; `field` gives the text that reads a fact, by its
    name, and `facts` the types of the facts (their values are then trusted to be of
    those types; unknown: any value). Expressions are assumed schema-valid."""
    return _py(expr, field, facts or {})[0]


def _py(expr: Any, field: Callable[[str], str], facts: Mapping[str, Types]) -> tuple[str, Types]:
    if not isinstance(expr, dict):
        return py_literal(expr), frozenset({type_of(expr)})
    (name, arg), = expr.items()
    if name == FIELD:
        return field(arg), facts.get(arg, ANY)
    op = OPS[name]
    texts, types = zip(*(_py(e, field, facts) for e in ([arg] if op.arity == 1 else arg)))
    return op.py(list(texts), list(types)), op.gives


def compile_py(expr: Any) -> Compiled:
    """A function of a subject's facts given as a dict, of any values (the rule engine
    compiles whole rule sets instead, with the facts' types: engine/pybackend.py)."""
    text = py_text(expr, lambda name: f"s.get({name!r})")
    fn: Compiled = eval(compile(f"lambda s: {text}", "<kbrules expression>", "eval"), dict(PY_HELPERS))
    return fn


def _field_jq(name: str) -> str:
    return f".[{json.dumps(name)}]"


def compile_jq(expr: Any, field: Callable[[str], str] = _field_jq) -> str:
    """jq text of the expression, applied to the subject as `.`. Literals become JSON
    text, which jq reads as the same literal. `field` gives the jq text of a fact by
    name (default: the subject's key of that name)."""
    if not isinstance(expr, dict):
        return json.dumps(expr)
    (name, arg), = expr.items()
    if name == FIELD:
        return field(arg)
    op = OPS[name]
    return op.jq([compile_jq(e, field) for e in ([arg] if op.arity == 1 else arg)])


def fields(expr: Any) -> set[str]:
    """The names of the facts an expression reads."""
    if not isinstance(expr, dict):
        return set()
    (name, arg), = expr.items()
    if name == FIELD:
        return {arg}
    return set().union(*(fields(e) for e in ([arg] if OPS[name].arity == 1 else arg)))
