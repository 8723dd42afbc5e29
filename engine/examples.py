"""Each rule's own pass and fail examples, run as its tests, by either engine."""

from __future__ import annotations

from typing import Any, Optional

from .errors import KbrulesError
from .evaluate import evaluate
from .normalize import normalize
from .report import to_dict
from .rule import Example, Rule

ENGINES = ("python", "jq")


def where(rule: Rule, example: Example, number: int) -> str:
    line = f":{example.line}" if example.line else ""
    return f"{rule.source}{line}: rule {rule.id}: example #{number} ({example.expect})"


def report_of(rule: Rule, example: Example, engine: str) -> dict[str, Any]:
    """The JSON report of one example with only its own rule, from either engine."""
    where = f"{rule.source}: rule {rule.id}"  # names the input in a refusal, in both engines
    if engine == "jq":
        from . import jqbackend  # the binding is needed only here

        return jqbackend.run(jqbackend.binding([rule]), example.input, example.bitmaps or None,
                             context=example.context, where=where)
    chain = normalize(example.input, where, context=example.context)
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
    found = [f for key in ("bitmaps", "checkpoints") for b in report[key] for f in b["findings"]]
    found += report["findings"]
    layers = sorted(f["layer"] for f in found if f["rule"] == rule.id)
    if example.expect == "pass" and layers:
        return f"{here}: expected no finding, got findings at layers {layers} ({engine})"
    if example.expect == "fail" and not layers:
        return f"{here}: expected a finding, got none ({engine})"
    if example.expect == "fail" and example.layers is not None and layers != sorted(example.layers):
        return f"{here}: expected findings at layers {sorted(example.layers)}, got {layers} ({engine})"
    return None
