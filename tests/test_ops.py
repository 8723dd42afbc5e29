"""Each operation of the rule vocabulary means the same in Python and in jq: both
backends run on the same subjects and must agree (jq here is /usr/bin/jq)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from typing import Any

import pytest

from engine import ops

VALUES: list[Any] = [None, False, True, 0, 1, 2.5, -3, "", "a", "b", "it's \\(.) $__loc__"]
SUBJECTS = [{"x": x, "y": y} for x, y in itertools.product(VALUES, repeat=2)]


def _expressions() -> list[Any]:
    x, y = {"field": "x"}, {"field": "y"}
    out: list[Any] = [x, 1, "lit \\(.)\"", None, True]
    for op in ops.OPS.values():
        out.append({op.name: x} if op.arity == 1 else {op.name: [x, y]})
        if op.arity == 0:
            out.append({op.name: [x]})
            out.append({op.name: [x, y, {"not": x}]})
    out.append({"all": [{"eq": [x, 1]}, {"not": {"lt": [y, "a"]}}]})
    return out


EXPRESSIONS = _expressions()


def test_every_operation_is_exercised() -> None:
    used = {next(iter(e)) for e in EXPRESSIONS if isinstance(e, dict)}
    assert set(ops.OPS) | {ops.FIELD} <= used


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed")
@pytest.mark.parametrize("expr", EXPRESSIONS, ids=json.dumps)
def test_python_and_jq_agree(expr: Any) -> None:
    program = f"[.[] | {ops.compile_jq(expr)}]"
    done = subprocess.run(["jq", "-c", program], input=json.dumps(SUBJECTS), capture_output=True,
                          text=True, check=True)
    from_jq = json.loads(done.stdout)
    fn = ops.compile_py(expr)
    from_py = [fn(s) for s in SUBJECTS]
    diffs = [(s, p, j) for s, p, j in zip(SUBJECTS, from_py, from_jq) if not ops.jq_eq(p, j)]
    assert not diffs, f"{program}: (subject, python, jq): {diffs[:5]}"


def test_jq_semantics_not_python_semantics() -> None:
    # Python would say True == 1 and treat 0 and "" as false; jq does not.
    assert ops.compile_py({"eq": [True, 1]})({}) is False
    assert ops.compile_py({"not": 0})({}) is False
    assert ops.compile_py({"any": [""]})({}) is True
    assert ops.compile_py({"lt": [None, False]})({}) is True


# Operands that each way of typing accepts, over facts of every type.
FACT_TYPES = {"b": frozenset({"boolean"}), "n": frozenset({"integer", "null"}), "s": frozenset({"string"})}
GOOD_OPERANDS = {"condition": {"field": "b"}, "equal": {"field": "n"}, "order": {"field": "n"},
                 "string": {"field": "s"}}


@pytest.mark.parametrize("op", ops.OPS.values(), ids=lambda op: op.name)
def test_every_operation_is_typed(op: ops.Op) -> None:
    good = GOOD_OPERANDS[op.takes]
    expr = {op.name: good} if op.arity == 1 else {op.name: [good] * (op.arity or 2)}
    assert ops.typecheck(expr, FACT_TYPES, "demo") == op.gives
    wrong = {"condition": {"field": "s"}, "equal": "x", "order": "x", "string": {"field": "b"}}[op.takes]
    bad = {op.name: wrong} if op.arity == 1 else {op.name: [good, wrong] if op.arity else [wrong]}
    with pytest.raises(ops.ExprError):
        ops.typecheck(bad, FACT_TYPES, "demo")


def test_literal_types() -> None:
    assert [ops.type_of(v) for v in (None, True, 3, 0.10, "0.10")] == \
        ["null", "boolean", "integer", "number", "string"]
    assert ops.describe(frozenset({"null", "integer"})) == "integer or null"


# With the operands' types known (the facts' types in the table), the Python texts are
# plain Python where that means what jq means: over values of those types, the same
# results as the texts for values of any type, which agree with jq above.
TYPED_VALUES: dict[str, list[Any]] = {"boolean": [True, False], "integer": [0, 1, -3, 1023],
                                      "number": [2.5, 1.0], "string": ["", "a", "b", "é"],
                                      "null": [None]}
TYPE_SETS = [frozenset(t) for t in ({"boolean"}, {"boolean", "null"}, {"integer"}, {"integer", "null"},
                                    {"integer", "number"}, {"string"}, {"string", "null"})]


@pytest.mark.parametrize("expr", EXPRESSIONS, ids=json.dumps)
def test_python_with_types_means_the_same(expr: Any) -> None:
    general = ops.compile_py(expr)
    for tx, ty in itertools.product(TYPE_SETS, repeat=2):
        text = ops.py_text(expr, lambda name: f"s.get({name!r})", {"x": tx, "y": ty})
        typed = eval(f"lambda s: {text}", dict(ops.PY_HELPERS))
        for x, y in itertools.product(*([v for t in sorted(types) for v in TYPED_VALUES[t]] for types in (tx, ty))):
            subject = {"x": x, "y": y}
            want, got = general(subject), typed(subject)
            assert (type(got), got) == (type(want), want), (text, subject, got, want)
