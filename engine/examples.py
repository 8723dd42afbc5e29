"""Each rule's own pass and fail examples, run as its tests, by either engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import KbrulesError, RulesError
from .evaluate import evaluate
from .normalize import normalize
from .report import to_dict
from .rules import Example, Rule, load_all, remember

ENGINES = ("python", "jq")


def where(rule: Rule, example: Example, number: int) -> str:
    line = f":{example.line}" if example.line else ""
    return f"{rule.source}{line}: rule {rule.id}: example #{number} ({example.expect})"


def report_of(rule: Rule, example: Example, engine: str) -> dict[str, Any]:
    """The JSON report of one example with only its own rule, from either engine."""
    if engine == "jq":
        from . import jqbackend  # the binding is needed only here

        return jqbackend.run(jqbackend.binding([rule]), example.input, example.bitmaps or None)
    chain = normalize(example.input, f"{rule.source}: rule {rule.id}")
    return to_dict(evaluate(chain, [rule], example.bitmaps or None))


def check_example(rule: Rule, example: Example, number: int, engine: str = "python") -> Optional[str]:
    """None when the example behaves as it says, else what went wrong."""
    here = where(rule, example, number)
    try:
        report = report_of(rule, example, engine)
    except KbrulesError as e:
        return f"{here}: input rejected: {e}"
    except Exception as e:  # the jq binding raises ValueError for a jq error
        return f"{here}: {engine} failed: {e}"
    found = [f for b in report["bitmaps"] for f in b["findings"]] + report["findings"]
    layers = sorted(f["layer"] for f in found if f["rule"] == rule.id)
    if example.expect == "pass" and layers:
        return f"{here}: expected no finding, got findings at layers {layers} ({engine})"
    if example.expect == "fail" and not layers:
        return f"{here}: expected a finding, got none ({engine})"
    if example.expect == "fail" and example.layers is not None and layers != sorted(example.layers):
        return f"{here}: expected findings at layers {sorted(example.layers)}, got {layers} ({engine})"
    return None


def load_checked(paths: Optional[Sequence[Path]] = None) -> list[Rule]:
    """The rules, after each one's examples passed in the Python engine: a rule whose
    own examples fail is a broken rules file. Files that passed are cached on disk."""
    rules = load_all(paths)
    fresh = [r for r in rules if not r.checked and id(r) not in _CHECKED]
    for rule in fresh:
        for number, example in enumerate(rule.examples, 1):
            problem = check_example(rule, example, number)
            if problem:
                raise RulesError(problem)
        _CHECKED.add(id(rule))
    for source in dict.fromkeys(r.source for r in fresh):
        remember(Path(source))
    return rules


# Rules already checked in this process, by identity: loaded Rule objects live in
# rules._LOADED for the whole process, and a changed file gives new ones.
_CHECKED: set[int] = set()
