"""The Python backend: a rule set compiled to plain Python, one function per subject
kind, the way fastjsonschema compiles a schema.

Each function is Python text built from the same tables as the jq program: the
rules' expressions in the operations' Python texts (engine/ops.py), over the facts'
Python texts (engine/subjects.py). It loops over the subjects of its kind, reads each
fact that its rules name once, into a local variable, and runs the rules on them; a
rule whose facts read only a shared context field (subjects.SHARED: a copy's bitmap,
one object for equal bitmaps in many layers) runs once per value of that field. Only
a failing rule makes a dict of the subject's facts (for its finding's message).
Nothing from a rules file becomes code but literals, through repr() (ops.py_literal),
and fact names, which the loader has checked against the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import ops, subjects
from .rule import Rule

# How a check reports a failing rule: (the rule's index in the rule set, the layer
# its finding is about, the subject's context).
Fail = Callable[[int, Any, Any], None]
Check = Callable[[Sequence[Any], Fail], None]


@dataclass(frozen=True)
class Program:
    """A rule set compiled to Python."""

    source: str  # the generated Python, for people and tests
    checks: dict[str, Check]  # subject kind -> its function, for the kinds that have rules


def _fields(expr: Any) -> set[str]:
    """The fact names an expression reads."""
    if not isinstance(expr, dict):
        return set()
    (name, arg), = expr.items()
    if name == ops.FIELD:
        return {arg}
    return set().union(*(_fields(e) for e in (arg if isinstance(arg, list) else [arg])))


def _local(fact: str) -> str:
    return f"f_{fact}"  # never a context field's name, which the facts' texts read


def _facts(kind: subjects.Kind, names: set[str], indent: str) -> list[str]:
    """Lines that read these facts into local variables, in the table's order."""
    return [f"{indent}{_local(f.name)} = {f.py}" for f in kind.facts if f.name in names]


# A rule's require is a condition (the loader checks it): its value is true, false or
# null, which Python's `not` judges as jq does.

def _text(kind: subjects.Kind, expr: Any) -> str:
    """Python text of an expression over the local facts, whose types the table gives."""
    return ops.py_text(expr, _local, kind.types())


def _rules(kind: subjects.Kind, numbered: Sequence[tuple[int, Rule]], indent: str) -> list[str]:
    """Lines that run each rule on the local facts, and report it where it fails."""
    lines = []
    for index, rule in numbered:
        lines += [f"{indent}# {rule.id}",
                  f"{indent}if not {_text(kind, rule.require)}:",
                  f"{indent}    fail({index}, {_text(kind, rule.at)}, c)"]
    return lines


def kind_source(kind: subjects.Kind, numbered: Sequence[tuple[int, Rule]]) -> str:
    """The function of one kind: its rules, each with its index in the rule set."""
    context = subjects.CONTEXTS[kind.name]
    facts = {f.name: f for f in kind.facts}
    shared = subjects.SHARED.get(kind.name)
    alone = {i for i, r in numbered  # rules whose facts read the shared field alone
             if shared and all(subjects.reads(facts[n], context) <= {shared} for n in _fields(r.require))}
    once = [(i, r) for i, r in numbered if i in alone]
    each = [(i, r) for i, r in numbered if i not in alone]
    read_each = set().union(*(_fields(r.require) | _fields(r.at) for _, r in each))
    lines = [f"def check_{kind.name}(contexts, fail):"]
    if once:
        lines += [f"    passed = {{}}  # id({shared}) -> whether the rules that read only it pass"]
    lines += ["    for c in contexts:", f"        {subjects.unpack(context)}"]
    lines += _facts(kind, read_each, " " * 8) + _rules(kind, each, " " * 8)
    if once:
        read_once = set().union(*(_fields(r.require) | _fields(r.at) for _, r in once)) - read_each
        lines += [f"        ok = passed.get(id({shared}))",
                  "        if ok is None:",
                  f"            ok = passed[id({shared})] = once_{kind.name}({shared})",
                  "        if not ok:  # then each of them again, on this subject",
                  *_facts(kind, read_once, " " * 12), *_rules(kind, once, " " * 12)]
        # The rules that read only the shared field, all at once: whether they all pass.
        lines = [f"def once_{kind.name}({shared}):",
                 *_facts(kind, set().union(*(_fields(r.require) for _, r in once)), " " * 4),
                 "    return bool(" + "\n                and ".join(
                     _text(kind, r.require) for _, r in once) + ")",
                 "", "", *lines]
    return "\n".join(lines) + "\n"


def compile_rules(rules: Sequence[Rule]) -> Program:
    """The rules as one Python function per subject kind that has rules."""
    parts = []
    for kind in subjects.KINDS.values():
        numbered = [(i, r) for i, r in enumerate(rules) if r.subject == kind.name]
        if numbered:
            parts.append(kind_source(kind, numbered))
    source = "\n\n".join(parts)
    namespace = dict(subjects.FACT_HELPERS)
    exec(compile(source, "<kbrules rules>", "exec"), namespace)
    return Program(source, {kind: namespace[f"check_{kind}"] for kind in subjects.KINDS
                            if f"check_{kind}" in namespace})


# Rule sets compiled in this process, by the identity of their rules (the loader
# makes each file's rules once); the rules are kept with their program, so that an
# id is not reused while its entry lives. A few sets at most in a run of kbrules;
# bounded for long-lived callers of engine.api that load many rule files.
_PROGRAMS: dict[tuple[int, ...], tuple[Sequence[Rule], Program]] = {}
_KEEP = 64


def program(rules: Sequence[Rule]) -> Program:
    """The compiled rule set, compiled once per set of rule objects."""
    key = tuple(map(id, rules))
    found = _PROGRAMS.get(key)
    if found is None:
        found = _PROGRAMS[key] = (tuple(rules), compile_rules(rules))
        if len(_PROGRAMS) > _KEEP:
            del _PROGRAMS[next(iter(_PROGRAMS))]
    return found[1]
