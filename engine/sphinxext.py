"""Sphinx extension: the rules and the command line, rendered from their one source.

- ``.. kbrules-rule:: ID`` in ``docs/kbase/<stem>.rst``: the section of rule ID of
  ``rules/<stem>.yaml`` (title, severity, statement), then the directive's own content
  (the article's words), then what kbrules reports when it fails and what to do. Its
  anchor is the rule id.
- ``:rule:`ID``` links to that section.
- ``.. kbrules-rules-reference:: [STEM...]``: every rule of those rules files (default:
  all) with its examples' inputs and outputs.
- ``.. kbrules-chain:: [PATH]`` draws a chain as kbrules check sees it: one row per
  layer, one column per bitmap, each copy's state, and the copies that break a rule
  (engine.picture), from qemu-img or QMP JSON in PATH (relative to the document) or
  in the directive's content. Options: ``:rules: STEM,...`` (default: every rules
  file), ``:rule: ID`` (this rule alone), ``:bitmap: ["NAME", ...]`` (default:
  every bitmap), ``:show-input:`` (the JSON folded away below the picture),
  ``:caption: TEXT``.
- ``.. kbrules-cli::``: every command and option, read from engine.cli's parser.
- ``.. kbrules-facts::``: every subject a rule is checked on and its facts, read from
  engine.subjects.KINDS; ``.. kbrules-ops::``: every operation of a rule's checks, read
  from engine.ops.OPS (the contributor page: they never drift from the code).

The build warns (an error under ``-W``) when an article leaves one of its rules out,
names a rule that its rules file lacks, or a rules file has no article.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective, SphinxRole
from sphinx.util.parsing import nested_parse_to_nodes

from . import docgen, draw
from .errors import KbrulesError
from .evaluate import evaluate
from .examples import check_example
from .loader import load_rules
from .normalize import normalize
from .picture import picture
from .rule import Rule

logger = logging.getLogger(__name__)

SHOWN = "kbrules_rules_shown"  # env attribute: docname -> rule ids rendered there


def _stem(docname: str) -> Optional[str]:
    """The article stem of a document in docs/kbase/, else None."""
    path = Path(docname)
    return path.name if str(path.parent) == docgen.ARTICLES else None


def _load(path: Path) -> list[Rule]:
    """The rules of one file; a broken file is a warning (an error under -W)."""
    try:
        return load_rules([path], examples=False)  # the build checks them itself
    except KbrulesError as e:
        logger.warning("%s", e)
        return []


def _rules_of(stem: str) -> dict[str, Rule]:
    path = docgen.rules_file(stem)
    return {r.id: r for r in _load(path)} if path.is_file() else {}


def _all_ids() -> set[str]:
    return {r.id for path in docgen.rule_files() for r in _load(path)}


class RuleDirective(SphinxDirective):
    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        rule_id = self.arguments[0]
        stem = _stem(self.env.docname)
        rules = _rules_of(stem) if stem else {}
        if rule_id not in rules:
            where = f"rules/{stem}.yaml" if stem else "(kbrules-rule belongs in docs/kbase/<stem>.rst)"
            logger.warning("kbrules-rule: no rule %r in %s", rule_id, where, location=self.get_location())
            return []
        rule = rules[rule_id]
        self.env.note_dependency(rule.source)  # a changed rules file rebuilds the article
        getattr(self.env, SHOWN).setdefault(self.env.docname, []).append(rule_id)
        source = f"{rule.source} (rule {rule.id})"
        out = nested_parse_to_nodes(self.state, docgen.rule_head(rule), source=source)
        section = next(n for n in out if isinstance(n, nodes.section))
        self.state.nested_parse(self.content, self.content_offset, section)
        section += nested_parse_to_nodes(self.state, docgen.rule_tail(rule), source=source)
        return out


class RuleRole(SphinxRole):
    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        rule_id = self.text.strip()
        shown = nodes.literal(rule_id, rule_id)
        if rule_id not in _all_ids():
            logger.warning(":rule: no rule %r in rules/*.yaml", rule_id, location=self.get_location())
            return [shown], []
        ref = addnodes.pending_xref("", shown, refdomain="std", reftype="ref", reftarget=rule_id,
                                    refexplicit=True, refwarn=True)
        return [ref], []


class RulesReference(SphinxDirective):
    optional_arguments = 20

    def run(self) -> list[nodes.Node]:
        paths = [docgen.rules_file(s) for s in self.arguments] or docgen.rule_files()
        for path in paths:
            self.env.note_dependency(str(path))
            rules = _load(path)
            if not rules:
                return []
            for rule in rules:
                for number, example in enumerate(rule.examples, 1):
                    problem = check_example(rule, example, number)
                    if problem:
                        logger.warning("%s", problem, location=self.get_location())
        for generator in (docgen.__file__, draw.__file__):  # rebuilt when they change
            self.env.note_dependency(str(generator))
        articles = {p.stem for p in paths if f"{docgen.ARTICLES}/{p.stem}" in self.env.found_docs}
        text = docgen.rules_reference(paths, articles)
        return nested_parse_to_nodes(self.state, text, source="rules reference (from rules/*.yaml)")


class ChainPicture(SphinxDirective):
    optional_arguments = 1
    has_content = True
    option_spec = {"rules": directives.unchanged, "rule": directives.unchanged,
                   "bitmap": directives.unchanged, "show-input": directives.flag,
                   "caption": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        try:
            text, value, report = self._report()
        except (KbrulesError, ValueError, OSError) as e:
            logger.warning("kbrules-chain: %s", e, location=self.get_location())
            return []
        self.env.note_dependency(draw.__file__)
        grid = picture(report)
        caption = self.options.get("caption", "")
        body = draw.grid_html(grid, caption)
        if "show-input" in self.options:
            body += ('<details class="kb-input"><summary>the input (JSON)</summary>'
                     f'<pre>{html.escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre></details>')
        other = "\n".join(([caption] if caption else []) + draw.grid_text(grid, indent=""))
        fallback = addnodes.only(expr="not html")
        fallback += nodes.literal_block(other, other)
        return [nodes.raw("", body, format="html"), fallback]

    def _report(self) -> tuple[str, Any, Any]:
        if self.arguments:
            path, absolute = self.env.relfn2path(self.arguments[0])
            self.env.note_dependency(path)
            text = Path(absolute).read_text(encoding="utf-8")
        else:
            text = "\n".join(self.content)
        value = json.loads(text)
        stems = [s.strip() for s in self.options.get("rules", "").split(",") if s.strip()]
        paths = [docgen.rules_file(s) for s in stems] or docgen.rule_files()
        for rules_path in paths:
            self.env.note_dependency(str(rules_path))
        rule = self.options.get("rule")
        rules = load_rules(paths, [rule] if rule else [], examples=False)
        bitmaps = json.loads(self.options["bitmap"]) if "bitmap" in self.options else None
        if bitmaps is not None and not (isinstance(bitmaps, list) and all(isinstance(b, str) for b in bitmaps)):
            raise ValueError(':bitmap: must be a JSON list of names, e.g. ["daily"]')
        return text, value, evaluate(normalize(value, self.arguments[0] if self.arguments else "content"),
                                     rules, bitmaps)


class CliReference(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        from . import cli

        self.env.note_dependency(cli.__file__)  # rebuilt when the parser changes
        return nested_parse_to_nodes(self.state, docgen.cli_reference(),
                                     source="command line reference (from engine.cli)")


class FactsReference(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        from . import subjects

        self.env.note_dependency(subjects.__file__)  # rebuilt when the facts change
        return nested_parse_to_nodes(self.state, docgen.facts_reference(),
                                     source="subjects and facts (from engine.subjects)")


class OpsReference(SphinxDirective):
    def run(self) -> list[nodes.Node]:
        from . import ops

        self.env.note_dependency(ops.__file__)  # rebuilt when the vocabulary changes
        return nested_parse_to_nodes(self.state, docgen.ops_reference(),
                                     source="operations (from engine.ops)")


def _init(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    if not hasattr(env, SHOWN):
        setattr(env, SHOWN, {})


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, SHOWN, {}).pop(docname, None)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: Any, other: BuildEnvironment) -> None:
    getattr(env, SHOWN).update(getattr(other, SHOWN, {}))


def _check(app: Sphinx, env: BuildEnvironment) -> None:
    """Each rules file has its article, and each article shows each of its rules once."""
    shown: dict[str, list[str]] = getattr(env, SHOWN, {})
    for path in docgen.rule_files():
        docname = f"{docgen.ARTICLES}/{path.stem}"
        if docname not in env.found_docs:
            logger.warning("rules/%s has no article %s.rst", path.name, docname)
            continue
        ids = [r.id for r in _load(path)]
        have = shown.get(docname, [])
        for rule_id in ids:
            if rule_id not in have:
                logger.warning("rule %s of rules/%s is not shown in its article "
                               "(.. kbrules-rule:: %s)", rule_id, path.name, rule_id,
                               location=docname)
        for rule_id in {i for i in have if have.count(i) > 1}:
            logger.warning("rule %s is shown twice", rule_id, location=docname)


CSS_FILE = "kbrules.css"  # the chain picture's stylesheet, from engine.draw.CSS


def _write_css(app: Sphinx, error: Optional[Exception]) -> None:
    if error is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        (static / CSS_FILE).write_text(draw.CSS + DOCS_CSS, encoding="utf-8")


# The docs' own additions: the input folded under a picture, and code blocks marked
# ":class: wrap" (a one-line message that must stay one line) wrapped, not clipped.
DOCS_CSS = """\
details.kb-input { margin: 0 0 1em; font-size: 0.9em; }
details.kb-input summary { cursor: pointer; }
div.wrap pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("kbrules-rule", RuleDirective)
    app.add_directive("kbrules-rules-reference", RulesReference)
    app.add_directive("kbrules-chain", ChainPicture)
    app.add_directive("kbrules-cli", CliReference)
    app.add_directive("kbrules-facts", FactsReference)
    app.add_directive("kbrules-ops", OpsReference)
    app.add_role("rule", RuleRole())
    app.connect("env-before-read-docs", _init)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check)
    app.add_css_file(CSS_FILE)
    app.connect("build-finished", _write_css)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

