"""Reports for people (text) and programs (JSON). The JSON shape is a contract: see
README, 'JSON report'."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from typing import Any

from .draw import PLAIN, Style, explain_picture, report_text
from .evaluate import evaluate
from .model import ADVICE, Finding, Report
from .plan import plan
from .normalize import normalize
from .rule import Example, Rule, Template
from .subjects import KINDS
from .text import plain, show


def _finding(f: Finding) -> dict[str, Any]:
    """A finding as the JSON report has it (README: 'JSON report'; `commands` is for
    the text report only, and not part of that contract)."""
    return {k: v for k, v in asdict(f).items() if k not in ("commands", "argv")}


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
        "trust_backing": report.chain.trust_backing,
        "chain": [{"layer": l.layer, "filename": l.filename, "format": l.format, "node": l.node}
                  for l in report.chain.layers],
        "rules": list(report.rules),
        "bitmaps": [{"name": v.name, "valid": v.valid, "findings": [_finding(f) for f in v.findings]}
                    for v in report.bitmaps],
        "findings": [_finding(f) for f in report.findings],
        "domain": None if report.chain.domain is None else {
            "name": report.chain.domain.name, "disk": report.chain.domain.disk,
            "running": report.chain.domain.running},
        "checkpoints": [{"name": c.name, "bitmap": c.bitmap, "usable": c.usable,
                         "findings": [_finding(f) for f in c.findings]} for c in report.checkpoints],
        "newest_usable_checkpoint": report.newest_usable,
        "plan": [{"bitmap": s.bitmap, "layer": s.layer, "say": s.say,
                  "command": list(s.command) if s.command is not None else None} for s in plan(report)],
    }


def to_text(report: Report, style: Style = PLAIN) -> str:
    """The text report (engine.draw): the chain picture, the bitmaps, the findings."""
    return report_text(report, style)


def example_summary(rule: Rule, example: Example) -> str:
    """What a rule's example shows, in words: 'fails, with a finding at layer 1
    (bitmap a)'."""
    text = "passes" if example.expect == "pass" else "fails"
    layers = example.layers
    if example.expect == "fail" and layers:
        text += (f", with a finding at layer {layers[0]}" if len(layers) == 1 else
                 f", with findings at layers {', '.join(map(str, layers[:-1]))} and {layers[-1]}")
    names = ", ".join(_name(n) for n in example.bitmaps)
    if names:
        text += f" ({'bitmap' if len(example.bitmaps) == 1 else 'bitmaps'} {names})"
    elif rule.subject != "layer":
        text += " (every bitmap)"
    return text


def _name(name: str) -> str:
    """A bitmap name in running text: as it is, or in JSON quotes when it is empty or
    has spaces at its ends."""
    return show(name) if name and name.strip() == name else show(json.dumps(name, ensure_ascii=False))


def example_report(rule: Rule, example: Example) -> Report:
    """What kbrules check says about an example's input, with this rule alone."""
    return evaluate(normalize(example.input, "example", context=example.context), [rule],
                    list(example.bitmaps) or None)


def template_lines(label: str, template: Template, width: int = 80) -> list[str]:
    """A message or remediation template as plain text: placeholders in capitals,
    each command on a line of its own."""
    rest = " " * len(label)
    lines: list[str] = []
    for piece, command in template.pieces():
        piece = " ".join(piece.split())
        if command:
            lines.append(rest + "  " + piece)
        elif piece.strip(" .,;"):
            piece = piece.lstrip(" .,;") if lines and lines[-1].startswith(rest + "  ") else piece
            lines += textwrap.wrap(piece, width, initial_indent=rest if lines else label,
                                   subsequent_indent=rest, break_long_words=False,
                                   break_on_hyphens=False)
    return lines if lines[0].startswith(label) else [label.rstrip()] + lines


def _remediation_lines(rule: Rule, width: int) -> list[str]:
    """One remediation, or one per source of the data where they differ."""
    templates = rule.remediation
    if len({t.text for t in templates.values()}) == 1:
        return template_lines("remediation: ", next(iter(templates.values())), width)
    lines = ["remediation, by where the data comes from:"]
    for advice, t in templates.items():
        lines += [f"  {ADVICE[advice]}:", *template_lines("    ", t, width)]
    return lines


def explanation(rule: Rule, style: Style = PLAIN) -> str:
    """kbrules explain: everything a person needs to know about one rule, as plain
    text (the docs render the same texts as reStructuredText)."""
    out = [f"{rule.id} ({rule.severity}): {rule.title}",
           f"article: docs/kbase/{rule.article}.rst, section \"{rule.id}\"",
           f"rules file: {rule.source}", "",
           *textwrap.wrap(plain(rule.statement), style.width, break_on_hyphens=False), "",
           f"checked on: {KINDS[rule.subject].doc} (subject {rule.subject})",
           *textwrap.wrap("requires: " + json.dumps(rule.require), style.width,
                          subsequent_indent="          ", break_on_hyphens=False), "",
           *template_lines("message:     ", rule.message, style.width),
           *_remediation_lines(rule, style.width),
           "", "examples (what kbrules check says with this rule alone):"]
    for number, example in enumerate(rule.examples, 1):
        out += ["", f"  {number}. {example_summary(rule, example)}"]
        out += explain_picture(example_report(rule, example), style)
    return "\n".join(out)
