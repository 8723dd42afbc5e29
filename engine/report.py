"""Reports for people (text) and programs (JSON). The JSON shape is a contract: see
README, 'JSON report'."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from typing import Any

from .model import ADVICE, Finding, Report
from .rule import Rule
from .text import count, show, table


def to_dict(report: Report) -> dict[str, Any]:
    # The overall verdict first: what the exit status says (ok: 0), and the findings
    # of each severity that count for it, in bitmaps, checkpoints and the chain.
    found = [f.severity for v in report.bitmaps for f in v.findings]
    found += [f.severity for c in report.checkpoints for f in c.findings]
    found += [f.severity for f in report.findings]
    return {
        "ok": not report.has_error,
        "errors": found.count("error"),
        "warnings": found.count("warning"),
        "source": report.chain.source,
        "chain": [{"layer": l.layer, "filename": l.filename, "format": l.format, "node": l.node}
                  for l in report.chain.layers],
        "rules": list(report.rules),
        "bitmaps": [{"name": v.name, "valid": v.valid, "findings": [asdict(f) for f in v.findings]}
                    for v in report.bitmaps],
        "findings": [asdict(f) for f in report.findings],
        "domain": None if report.chain.domain is None else {
            "name": report.chain.domain.name, "disk": report.chain.domain.disk,
            "running": report.chain.domain.running},
        "checkpoints": [{"name": c.name, "bitmap": c.bitmap, "usable": c.usable,
                         "findings": [asdict(f) for f in c.findings]} for c in report.checkpoints],
        "newest_usable_checkpoint": report.newest_usable,
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
    out = []
    if chain.domain is not None:
        d = chain.domain
        out += [f"domain {show(d.name)}, disk {show(d.disk)} "
                f"({'running: read live over QMP' if d.running else 'shut off: read with qemu-img'})"]
    out += [f"chain from {chain.source}, {count(len(chain.layers), 'layer')}, top first:"]
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
    if chain.domain is not None:
        out += ["", *_checkpoint_lines(report)]
    findings = [(f, f", bitmap '{show(v.name)}'") for v in report.bitmaps for f in v.findings]
    findings += [(f, f", checkpoint '{show(c.name)}'") for c in report.checkpoints for f in c.findings]
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


def _checkpoint_lines(report: Report) -> list[str]:
    """Which checkpoints an incremental backup of this disk can start from now."""
    if not report.checkpoints:
        return ["no checkpoints: libvirt can make only a full backup of this disk"]
    valid = {v.name: v for v in report.bitmaps}
    rows = [["CHECKPOINT", "USABLE", "WHY NOT"]]
    for c in report.checkpoints:
        errors = [f.rule for f in c.findings if f.severity == "error"]
        bitmap = valid.get(c.bitmap or "")
        if not c.usable and bitmap is not None and not bitmap.valid:
            errors.append(f"bitmap {bitmap.findings[0].rule}")
        why = "-" if c.usable else ", ".join(errors) or \
            ("leaves this disk out" if c.bitmap is None else "its bitmap is not checked")
        rows.append([show(c.name, 40), "yes" if c.usable else "no", why])
    newest = report.newest_usable
    return ["checkpoints, oldest first:", *("  " + line for line in table(rows)),
            f"newest usable checkpoint: {show(newest) if newest is not None else 'none'}"]


def _remediation_lines(rule: Rule) -> list[str]:
    texts = {advice: t.text for advice, t in rule.remediation.items()}
    if len(set(texts.values())) == 1:
        return ["remediation: " + next(iter(texts.values()))]
    return ["remediation, for data from"] + [f"  {ADVICE[a]}: {text}" for a, text in texts.items()]


def explanation(rule: Rule) -> str:
    """kbrules explain: everything a person needs to know about one rule."""
    out = [f"{rule.id} ({rule.severity}): {rule.title}",
           f"article: docs/kbase/{rule.article}.rst, section \"{rule.id}\"",
           f"rules file: {rule.source}", "", textwrap.fill(" ".join(rule.statement.split()), 88),
           "", "checked on: each " + rule.subject + ", requires: " + json.dumps(rule.require),
           "", "message:     " + rule.message.text, *_remediation_lines(rule),
           "", "examples:"]
    for number, example in enumerate(rule.examples, 1):
        names = ", ".join(map(repr, example.bitmaps)) or ("every bitmap" if rule.subject != "layer" else "")
        at = f"findings at layers {list(example.layers)}" if example.layers is not None else ""
        details = ", ".join(d for d in (names, at) if d)
        about = f" ({details})" if details else ""
        out.append(f"  #{number} {example.expect}{about}: {show(json.dumps(example.input), 200)}")
    return "\n".join(out)
