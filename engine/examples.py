"""Each rule's own pass and fail examples, run as its tests."""

from __future__ import annotations

from typing import Optional

from .errors import KbrulesError
from .evaluate import evaluate
from .normalize import normalize
from .rules import Example, Rule


def check_example(rule: Rule, example: Example, number: int) -> Optional[str]:
    """None when the example behaves as it says, else what went wrong."""
    where = f"{rule.source}: rule {rule.id}: example #{number}"
    try:
        chain = normalize(example.input, where)
    except KbrulesError as e:
        return f"{where}: input rejected: {e}"
    report = evaluate(chain, [rule], example.bitmaps or None)
    layers = sorted(f.layer for v in report.bitmaps for f in v.findings + report.findings
                    if f.rule == rule.id)
    if example.expect == "pass" and layers:
        return f"{where}: expected no finding, got findings at layers {layers}"
    if example.expect == "fail" and not layers:
        return f"{where}: expected a finding, got none"
    if example.expect == "fail" and example.layers is not None and layers != sorted(example.layers):
        return f"{where}: expected findings at layers {sorted(example.layers)}, got {layers}"
    return None
