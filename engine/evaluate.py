"""Rules over a chain -> findings -> verdicts -> report. Pure: no I/O."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from . import subjects
from .model import SEVERITIES, Chain, Finding, Report, Verdict, any_error
from .rule import Rule

SHARED_RW_CAVEAT = ("this layer was read with --force-share while a program may have it open "
                    "read-write: its in-use flags say nothing about the bitmaps' health; "
                    "ask the running QEMU (QMP query-named-block-nodes) instead")


def _finding(rule: Rule, chain: Chain, facts: dict[str, Any]) -> Finding:
    index = rule.layer_of(facts)
    layer = chain.layers[index]
    context = {**subjects.layer_fields(layer), **facts}  # facts win over the layer's fields
    return Finding(rule=rule.id, severity=rule.severity, layer=index, filename=layer.filename,
                   message=rule.message.render(context),
                   remediation=rule.remediation.render(context),
                   commands=rule.remediation.render_commands(context),
                   caveat=SHARED_RW_CAVEAT if layer.shared_rw else None)


def ordered(found: Sequence[Finding], rules: Sequence[Rule]) -> tuple[Finding, ...]:
    """Errors first, then rule order, then layer: the first finding is the most basic
    failing rule."""
    order = {rule.id: i for i, rule in enumerate(rules)}
    return tuple(sorted(found, key=lambda f: (SEVERITIES.index(f.severity), order[f.rule], f.layer)))


def evaluate(chain: Chain, rules: Sequence[Rule], bitmaps: Optional[Sequence[str]] = None) -> Report:
    """Check `bitmaps` (default: every bitmap name in the chain) against `rules`."""
    subs = subjects.build(chain, bitmaps)
    per_name: dict[str, list[Finding]] = {name: [] for name in subs.names}
    chain_level: list[Finding] = []
    for rule in rules:
        check = rule.check
        grouped = subjects.grouped(rule.subject)
        for facts in subs.by_kind[rule.subject]:
            result = check(facts)
            if result is None or result is False:  # jq's falsy values
                finding = _finding(rule, chain, facts)
                (per_name[facts["name"]] if grouped else chain_level).append(finding)
    verdicts = tuple(Verdict(name, not any_error(f.severity for f in found), ordered(found, rules))
                     for name, found in per_name.items())
    return Report(chain, tuple(r.id for r in rules), verdicts, ordered(chain_level, rules))
