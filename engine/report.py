"""Reports for people (text) and programs (JSON). The JSON shape is a contract: see
README, 'JSON report'."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from typing import Any

from .model import Finding, Report
from .rule import Rule
from .text import count, show, table


def to_dict(report: Report) -> dict[str, Any]:
    return {
        "source": report.chain.source,
        "trust_backing": report.chain.trust_backing,
        "chain": [{"layer": l.layer, "filename": l.filename, "format": l.format, "node": l.node}
                  for l in report.chain.layers],
        "rules": list(report.rules),
        "bitmaps": [{"name": v.name, "valid": v.valid, "findings": [asdict(f) for f in v.findings]}
                    for v in report.bitmaps],
        "findings": [asdict(f) for f in report.findings],
    }


def _finding_lines(f: Finding, about: str) -> list[str]:
    lines = [f"  {f.severity.upper()} {f.rule}{about}, layer {f.layer} ({show(f.filename)})",
             f"    {show(f.message)}",
             f"    fix: {show(f.remediation)}"]
    if f.caveat:
        lines.append(f"    note: {f.caveat}")
    return lines


def to_text(report: Report) -> str:
    chain = report.chain
    out = [f"chain from {chain.source}, {count(len(chain.layers), 'layer')}, top first:"]
    out += ["  " + line for line in table(
        [["LAYER", "FORMAT", "FILE"]]
        + [[str(l.layer), l.format, show(l.filename)] for l in chain.layers])]
    if not chain.complete:
        last = chain.layers[-1]
        out.append(f"  (incomplete: layer {last.layer} has the backing file "
                   f"{show(last.backing or '?')}, which is not in the input)")
    out.append("")
    if not report.bitmaps:
        out.append("no bitmaps in this chain (name one with --bitmap to check it anyway)")
    else:
        rows = [["BITMAP", "VALID", "FIRST FAILING RULE", "LAYER", "FILE"]]
        for v in report.bitmaps:
            # Findings come errors first: a warning alone does not fail the bitmap.
            first = v.findings[0] if v.findings and v.findings[0].severity == "error" else None
            rows.append([show(v.name, 40) or '""', "yes" if v.valid else "NO",
                         first.rule if first else "-", str(first.layer) if first else "-",
                         show(first.filename, 60) if first else "-"])
        out += table(rows)
    findings = [(f, f", bitmap '{show(v.name)}'") for v in report.bitmaps for f in v.findings]
    findings += [(f, "") for f in report.findings]
    if findings:
        out += ["", "findings:"]
        for f, about in findings:
            out += _finding_lines(f, about)
    valid = sum(v.valid for v in report.bitmaps)
    summary = f"{count(len(report.bitmaps), 'bitmap')} checked: {valid} valid, {len(report.bitmaps) - valid} not valid"
    errors = sum(f.severity == "error" for f in report.findings)
    if report.findings:
        summary += f"; {count(len(report.findings), 'chain finding')} ({count(errors, 'error')})"
    out += ["", summary]
    return "\n".join(out)


def explanation(rule: Rule) -> str:
    """kbrules explain: everything a person needs to know about one rule."""
    out = [f"{rule.id} ({rule.severity}): {rule.title}",
           f"article: docs/kbase/{rule.article}.rst, section \"{rule.id}\"",
           f"rules file: {rule.source}", "", textwrap.fill(" ".join(rule.statement.split()), 88),
           "", "checked on: each " + rule.subject + ", requires: " + json.dumps(rule.require),
           "", "message:     " + rule.message.text, "remediation: " + rule.remediation.text,
           "", "examples:"]
    for number, example in enumerate(rule.examples, 1):
        names = ", ".join(map(repr, example.bitmaps)) or ("every bitmap" if rule.subject != "layer" else "")
        at = f"findings at layers {list(example.layers)}" if example.layers is not None else ""
        details = ", ".join(d for d in (names, at) if d)
        about = f" ({details})" if details else ""
        out.append(f"  #{number} {example.expect}{about}: {show(json.dumps(example.input), 200)}")
    return "\n".join(out)
