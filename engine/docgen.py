"""reStructuredText generated from the rules files and from the CLI's own parser, for
the articles and the reference pages. Pure text in, text out: no Sphinx here
(engine/sphinxext.py parses what these functions return), so tests can read it too.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from .loader import load_rules, rules_dir
from .model import ADVICE
from .report import example_report, example_summary
from .rule import Rule, Template
from .subjects import KINDS

HEADINGS = "-~^\""  # underline characters, outermost first
ARTICLES = "docs/kbase"  # where the article of rules/<stem>.yaml lives: docs/kbase/<stem>.rst


def rules_file(stem: str) -> Path:
    """rules/<stem>.yaml: the rules stated by the article of that stem."""
    return rules_dir() / f"{stem}.yaml"


def rule_files() -> list[Path]:
    return sorted(rules_dir().glob("*.yaml"))


# Text ------------------------------------------------------------------------------------

_MARKUP = re.compile(r"([\\`*_|])")


def escape(text: str) -> str:
    """Plain text as one line of reStructuredText that renders as itself."""
    line = _MARKUP.sub(r"\\\1", " ".join(text.split()))
    # A line that starts like a list item, a directive or a field would be read as one.
    return "\\" + line if re.match(r"[-+*#.:(|0-9]", line) else line


def heading(title: str, level: int) -> list[str]:
    return [title, HEADINGS[level] * max(len(title), 4), ""]


def template(t: Template, label: str = "") -> list[str]:
    """A message or remediation template as reStructuredText lines, read as `kbrules
    explain` prints it: each placeholder as its field's name in capitals (FILENAME),
    each command in a literal block of its own."""
    lines: list[str] = []
    after_command = False
    for piece, command in t.pieces():
        piece = " ".join(piece.split())
        if command:
            if not lines and label:
                lines += [label.strip(), ""]
            lines += _code("sh", piece)
        else:
            piece = piece.lstrip(" .,;") if after_command else piece
            if piece:
                lines += [(label if not lines else "") + escape(piece), ""]
        after_command = command
    return lines


def _indent(lines: Sequence[str], by: str = "   ") -> list[str]:
    return [by + line if line else "" for line in lines]


def _code(language: str, text: str) -> list[str]:
    return [f".. code-block:: {language}", "", *_indent(text.splitlines()), ""]


# Rules in their article ------------------------------------------------------------------


def rule_head(rule: Rule, level: int = 0) -> str:
    """The start of a rule's section in its article: label (the rule id, so that the
    section's anchor is #ID), title, severity, statement."""
    lines = [f".. _{rule.id}:", "", *heading(f"``{rule.id}``: {escape(rule.title)}", level),
             f":Severity: {rule.severity}",
             f":Checked on: {escape(KINDS[rule.subject].doc)}",
             f":Reference: :ref:`examples and details <reference-{rule.id}>`", "",
             *rule.statement.strip().splitlines(), ""]
    return "\n".join(lines)


def remediation(rule: Rule, title: str) -> list[str]:
    """A rule's remediation: one text, or one per source of the data where they differ."""
    templates = rule.remediation
    if len({t.text for t in templates.values()}) == 1:
        return template(next(iter(templates.values())), f"{title}: ")
    lines = [f"{title}, by where the data comes from:", ""]
    for advice, t in templates.items():
        lines += template(t, f"*{escape(ADVICE[advice].capitalize())}*: ")
    return lines


def rule_tail(rule: Rule) -> str:
    """The end of a rule's section: what kbrules says when it fails, and what to do."""
    return "\n".join([
        ".. rubric:: When it fails", "",
        *template(rule.message, "kbrules reports: "), *remediation(rule, "What to do")])


# The rules reference ---------------------------------------------------------------------

def rule_reference(rule: Rule, level: int, has_article: bool = True) -> list[str]:
    article = f":ref:`in its article <{rule.id}>`" if has_article else "(its article is missing)"
    lines = [f".. _reference-{rule.id}:", "", *heading(f"``{rule.id}``: {escape(rule.title)}", level),
             f"**{rule.severity}**, checked on {escape(KINDS[rule.subject].doc)} "
             f"(subject ``{rule.subject}``); {article}. Requires:", "",
             *_code("json", _compact(rule.require)),
             *rule.statement.strip().splitlines(), "",
             *template(rule.message, "**Message:** "),
             *remediation(rule, "**Remediation**")]
    for number, example in enumerate(rule.examples, 1):
        lines += [f".. rubric:: Example {number}: {escape(example_summary(rule, example))}", "",
                  *chain_directive(example.input, rule=rule.id, bitmaps=example.bitmaps)]
        report = example_report(rule, example)
        findings = [f for v in report.bitmaps for f in v.findings] + list(report.findings)
        lines += [f"- layer {f.layer}: {escape(f.message)}" for f in findings]
        lines += [""] if findings else []
    return lines


def _compact(value: Any, width: int = 80) -> str:
    """JSON on one line when it fits `width`, else indented."""
    line = json.dumps(value)
    return line if len(line) <= width else json.dumps(value, indent=2)


def chain_directive(value: Any, rule: Optional[str] = None, bitmaps: Sequence[str] = ()) -> list[str]:
    """A kbrules-chain directive that draws `value` (qemu-img or QMP JSON), with its
    input folded below the picture."""
    options = [":show-input:"]
    if rule:
        options.append(f":rule: {rule}")
    if bitmaps:
        options.append(f":bitmap: {json.dumps(list(bitmaps), ensure_ascii=False)}")
    body = json.dumps(value, indent=2, ensure_ascii=False).splitlines()
    return [".. kbrules-chain::", *_indent(options), "", *_indent(body), ""]


def rules_reference(paths: Sequence[Path], articles: Optional[set[str]] = None,
                    level: int = 0) -> str:
    """Every rule of these files: one section per file, one per rule. Links go to the
    articles whose stems are in `articles` (default: all)."""
    lines: list[str] = []
    for path in paths:
        has_article = articles is None or path.stem in articles
        stated = (f"stated in :doc:`/{ARTICLES}/{path.stem}`" if has_article
                  else f"its article ``{ARTICLES}/{path.stem}.rst`` is missing")
        lines += [f".. _reference-rules-{path.stem}:", "",
                  *heading(f"{escape(_title_of(path))}", level),
                  f"From ``rules/{path.name}``; {stated}.", ""]
        for rule in load_rules([path]):
            lines += rule_reference(rule, level + 1, has_article)
    return "\n".join(lines)


def _title_of(path: Path) -> str:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return str(data.get("title", path.stem)) if isinstance(data, dict) else path.stem


# The command line reference --------------------------------------------------------------

def cli_parser() -> argparse.ArgumentParser:
    """The parser kbrules itself uses, as engine.cli builds it."""
    from .cli import build_parser

    return build_parser()


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=80)  # type: ignore[call-arg]


def _usage(parser: argparse.ArgumentParser) -> str:
    f = _formatter(parser)
    f.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return f.format_help().strip()


def _paragraphs(text: Optional[str]) -> list[str]:
    if not text:
        return []
    return [line for p in re.split(r"\n\s*\n", text.strip()) for line in (escape(p), "")]


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases share one parser
                    seen.add(id(sub))
                    out.append((name, helps.get(name, ""), sub))
    return out


def arguments(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(invocation, help) of each documented argument and option, as --help shows them."""
    f = _formatter(parser)
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        text = f._expand_help(action) if action.help else ""
        if action.choices and action.metavar is not None:  # else the invocation shows them
            text += f" (one of: {', '.join(map(str, action.choices))})"
        out.append((f._format_action_invocation(action), text.strip()))
    return out


def cli_reference(parser: Optional[argparse.ArgumentParser] = None, level: int = 0) -> str:
    """Every command and option of kbrules, from its argparse parser."""
    return "\n".join(_command(parser or cli_parser(), level, ""))


def _command(parser: argparse.ArgumentParser, level: int, summary: str) -> list[str]:
    label = "cli-" + "-".join(parser.prog.split()[1:] or ["kbrules"])
    lines = [f".. _{label}:", "", *heading(f"``{parser.prog}``", level)]
    if summary:
        lines += [escape(summary[0].upper() + summary[1:]) + ".", ""]
    lines += _paragraphs(parser.description)
    lines += _code("text", _usage(parser))
    args = arguments(parser)
    if args:
        lines += [".. rubric:: Arguments and options", ""]
        for invocation, text in args:
            lines += [f"``{invocation}``", *_indent([escape(text) or "(no description)"]), ""]
    subs = subcommands(parser)
    if subs:
        lines += [".. rubric:: Commands", ""]
        lines += [f"- :ref:`{sub.prog} <cli-{'-'.join(sub.prog.split()[1:])}>`: {escape(h)}"
                  for _, h, sub in subs] + [""]
    if parser.epilog:
        lines += _code("text", parser.epilog.rstrip())
    for _, text, sub in subs:
        lines += _command(sub, level + 1, text)
    return lines


# Which rules an article names ------------------------------------------------------------

_DIRECTIVE = re.compile(r"^\s*\.\.\s+kbrules-rule::\s*(\S+)", re.M)
_ROLE = re.compile(r":rule:`([^`<]+?)`")


def rules_shown(rst: str) -> list[str]:
    """Rule ids an article renders with the kbrules-rule directive, in order."""
    return _DIRECTIVE.findall(rst)


def rules_named(rst: str) -> set[str]:
    """Every rule id an article refers to: the directives and the :rule: roles."""
    return set(rules_shown(rst)) | {m.strip() for m in _ROLE.findall(rst)}


# The rule vocabulary: subjects, facts, operations -----------------------------------------

def _example_form(name: str, arity: int) -> str:
    """How an operation is written in a rules file, as YAML flow text."""
    if arity == 1:
        return f"{{{name}: A}}"
    if arity == 2:
        return f"{{{name}: [A, B]}}"
    return f"{{{name}: [A, B, ...]}}"


def facts_reference(kinds: Optional[dict[str, Any]] = None,
                    layer_fields: Optional[Sequence[Any]] = None) -> str:
    """Every subject a rule can be checked on, with its facts and their types, from
    engine.subjects.KINDS (so the list follows the code), and the layer fields that
    templates may also name."""
    from .ops import describe
    from .subjects import FINDING_FIELDS

    kinds = KINDS if kinds is None else kinds
    layer_fields = FINDING_FIELDS if layer_fields is None else layer_fields
    lines: list[str] = []
    for kind in kinds.values():
        lines += [f".. rubric:: ``subject: {kind.name}``: {escape(kind.doc)}", ""]
        lines += [f"- ``{f.name}`` ({describe(f.types)}): {escape(f.doc)}" for f in kind.facts] + [""]
    if layer_fields:
        names = [f"``{{{f.name}}}``" for f in layer_fields]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        lines += ["Besides its subject's facts, a message or remediation may name "
                  f"{listed}: of the layer the finding is about, and of the libvirt domain. "
                  "``{{fact|sh}}`` quotes the "
                  "value as one word for a POSIX shell; ``{{`` and ``}}`` are literal braces.", ""]
    return "\n".join(lines)


def ops_reference(table: Optional[dict[str, Any]] = None) -> str:
    """Every operation of a rule's ``require`` and ``at``, from engine.ops.OPS."""
    from . import ops

    table = ops.OPS if table is None else table
    lines = [f"- ``{{{ops.FIELD}: NAME}}``: the value of the subject's fact NAME",
             "- a literal (string, number, ``true``, ``false``, ``null``): itself"]
    for op in table.values():
        lines.append(f"- ``{_example_form(op.name, op.arity)}``: {escape(op.doc)}")
    return "\n".join(lines + [""])
