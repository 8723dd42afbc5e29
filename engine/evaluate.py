"""Rules over a chain -> findings -> verdicts -> report. Pure: no I/O."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from . import subjects
from .model import Chain, Finding, Report, Verdict
from .rules import SEVERITIES, Rule

SHARED_RW_CAVEAT = ("this layer was read with --force-share while a program may have it open "
                    "read-write: its in-use flags say nothing about the bitmaps' health; "
                    "ask the running QEMU (QMP query-named-block-nodes) instead")


def _finding(rule: Rule, chain: Chain, facts: dict[str, Any]) -> Finding:
    index = rule.layer_of(facts)
    layer = chain.layers[index]
    context = {"filename": layer.filename, "format": layer.format, "node": layer.node, **facts}
    return Finding(rule=rule.id, severity=rule.severity, layer=index, filename=layer.filename,
                   message=rule.message.render(context),
                   remediation=rule.remediation.render(context),
                   caveat=SHARED_RW_CAVEAT if layer.shared_rw else None)


def evaluate(chain: Chain, rules: Sequence[Rule], bitmaps: Optional[Sequence[str]] = None) -> Report:
    """Check `bitmaps` (default: every bitmap name in the chain) against `rules`."""
    subs = subjects.build(chain, bitmaps)
    order = {rule.id: i for i, rule in enumerate(rules)}
    per_name: dict[str, list[Finding]] = {name: [] for name in subs.names}
    chain_level: list[Finding] = []
    for rule in rules:
        check = rule.check
        for facts in subs.by_kind.get(rule.subject, ()):
            result = check(facts)
            if result is None or result is False:  # jq's falsy values
                finding = _finding(rule, chain, facts)
                (per_name[facts["name"]] if "name" in facts else chain_level).append(finding)

    def ordered(found: list[Finding]) -> tuple[Finding, ...]:
        # Errors first, then rule order: the first finding is the most basic failing rule.
        return tuple(sorted(found, key=lambda f: (SEVERITIES.index(f.severity), order[f.rule], f.layer)))

    verdicts = tuple(
        Verdict(name, not any(f.severity == "error" for f in found), ordered(found))
        for name, found in per_name.items())
    return Report(chain, tuple(r.id for r in rules), verdicts, ordered(chain_level))
