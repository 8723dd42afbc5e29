"""Rules over a chain -> findings -> verdicts -> report. Pure: no I/O."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from . import subjects
from .model import SEVERITIES, Chain, CheckpointVerdict, Finding, Report, Verdict, any_error
from .rule import Rule

SHARED_RW_CAVEAT = ("this layer was read with --force-share while a program may have it open "
                    "read-write: its in-use flags say nothing about the bitmaps' health; "
                    "ask the running QEMU (QMP query-named-block-nodes) instead")


def _finding(rule: Rule, chain: Chain, facts: dict[str, Any]) -> Finding:
    index = rule.layer_of(facts)
    layer = chain.layers[index]
    context = {**subjects.finding_fields(layer, chain.domain), **facts}  # facts win
    return Finding(rule=rule.id, severity=rule.severity, layer=index, filename=layer.filename,
                   message=rule.message.render(context),
                   remediation=rule.remediation[chain.advice].render(context),
                   commands=rule.remediation[chain.advice].render_commands(context),
                   argv=rule.remediation[chain.advice].render_argv(context),
                   caveat=SHARED_RW_CAVEAT if layer.shared_rw else None)


def ordered(found: Sequence[Finding], rules: Sequence[Rule]) -> tuple[Finding, ...]:
    """Errors first, then rule order, then layer: the first finding is the most basic
    failing rule."""
    order = {rule.id: i for i, rule in enumerate(rules)}
    return tuple(sorted(found, key=lambda f: (SEVERITIES.index(f.severity), order[f.rule], f.layer)))


def evaluate(chain: Chain, rules: Sequence[Rule], bitmaps: Optional[Sequence[str]] = None) -> Report:
    """Check `bitmaps` (default: every bitmap name in the chain, and every name that a
    checkpoint of its libvirt domain gives it) against `rules`."""
    subs = subjects.build(chain, bitmaps)
    groups: dict[Optional[str], dict[str, list[Finding]]] = {
        "bitmap": {name: [] for name in subs.names},
        "checkpoint": {f["name"]: [] for f in subs.by_kind["checkpoint"]}}
    chain_level: list[Finding] = []
    for rule in rules:
        check = rule.check
        group = groups.get(subjects.KINDS[rule.subject].group)
        for facts in subs.by_kind[rule.subject]:
            result = check(facts)
            if result is None or result is False:  # jq's falsy values
                finding = _finding(rule, chain, facts)
                (group[facts["name"]] if group is not None else chain_level).append(finding)
    verdicts = tuple(Verdict(name, not any_error(f.severity for f in found), ordered(found, rules))
                     for name, found in groups["bitmap"].items())
    valid = {v.name: v.valid for v in verdicts}
    points = tuple(
        CheckpointVerdict(facts["name"], facts["bitmap"],
                          facts["covers"] and not any_error(f.severity for f in found)
                          and valid.get(facts["bitmap"], False),
                          ordered(found, rules))
        for facts, found in zip(subs.by_kind["checkpoint"], groups["checkpoint"].values()))
    return Report(chain, tuple(r.id for r in rules), verdicts, ordered(chain_level, rules), points)
