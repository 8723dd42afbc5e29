"""The docs: every rule is stated in its article and only real rules are named there,
the reference pages cover every rule and every command, and the article harness
(docs/conftest.py) really fails when an output differs, and cleans up when it does."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import pytest

from engine import docgen
from engine.loader import load_rules

ROOT = Path(__file__).resolve().parents[1]
ARTICLES = ROOT / "docs" / "kbase"
HARNESS = ROOT / "docs" / "conftest.py"
RULE_FILES = sorted((ROOT / "rules").glob("*.yaml"))
ARTICLE_FILES = sorted(ARTICLES.glob("*.rst"))
CONTRIBUTING = ROOT / "docs" / "contributing.rst"
MONITORING = ROOT / "docs" / "monitoring.rst"
LIVE_PAGES = [*ARTICLE_FILES, CONTRIBUTING, MONITORING]  # every page whose sessions run as tests


def _harness() -> ModuleType:
    """docs/conftest.py, imported as a module of its own."""
    name = "kbrules_docs_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HARNESS)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


# Rules and their articles --------------------------------------------------------------

@pytest.mark.parametrize("rules", RULE_FILES, ids=[p.stem for p in RULE_FILES])
def test_every_rule_is_stated_in_its_article(rules: Path) -> None:
    article = ARTICLES / f"{rules.stem}.rst"
    assert article.is_file(), f"rules/{rules.name} has no article docs/kbase/{article.name}"
    shown = docgen.rules_shown(article.read_text(encoding="utf-8"))
    ids = [r.id for r in load_rules([rules])]
    missing = [i for i in ids if i not in shown]
    assert not missing, f"{article.name} lacks '.. kbrules-rule::' for {missing}"
    assert len(shown) == len(set(shown)), f"{article.name} shows a rule twice: {shown}"


@pytest.mark.parametrize("article", ARTICLE_FILES, ids=[p.stem for p in ARTICLE_FILES])
def test_articles_name_only_rules_that_exist(article: Path) -> None:
    text = article.read_text(encoding="utf-8")
    own = {r.id for r in load_rules([ROOT / "rules" / f"{article.stem}.yaml"])}
    every = {r.id for p in RULE_FILES for r in load_rules([p])}
    strangers = [i for i in docgen.rules_shown(text) if i not in own]
    assert not strangers, f"{article.name} shows rules not in rules/{article.stem}.yaml: {strangers}"
    unknown = sorted(docgen.rules_named(text) - every)
    assert not unknown, f"{article.name} names rules that do not exist: {unknown}"


def test_rule_names_are_found_in_an_article() -> None:
    text = ".. kbrules-rule:: a-rule\n\n   text :rule:`b-rule` and :rule:`a-rule`\n"
    assert docgen.rules_shown(text) == ["a-rule"]
    assert docgen.rules_named(text) == {"a-rule", "b-rule"}


# Reference pages -------------------------------------------------------------------------

def test_rules_reference_covers_every_rule_and_example() -> None:
    text = docgen.rules_reference(RULE_FILES)
    for path in RULE_FILES:
        for rule in load_rules([path]):
            assert f".. _reference-{rule.id}:" in text
            assert rule.statement.strip().splitlines()[0] in text
            for number in range(1, len(rule.examples) + 1):
                assert re.search(rf"Example {number}: (passes|fails)", text)
    # The output shown for a failing example is what kbrules says: its finding.
    assert "bitmap 'a' is not in the top image top.qcow2" in text


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [parser] + [p for _, _, sub in docgen.subcommands(parser) for p in _commands(sub)]


def test_cli_reference_covers_every_command_and_option() -> None:
    # Read from the parser kbrules runs, so commands added later are covered too.
    parser = docgen.cli_parser()
    text = docgen.cli_reference(parser)
    commands = _commands(parser)
    assert {"kbrules", "kbrules check", "kbrules jq"} <= {p.prog for p in commands}
    for command in commands:
        assert f"``{command.prog}``" in text
        for action in command._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            for name in action.option_strings or [action.metavar or action.dest]:
                assert name in text, f"{command.prog}: {name} is not in the CLI reference"


def test_cli_reference_follows_the_parser() -> None:
    parser = argparse.ArgumentParser(prog="kbrules")
    sub = parser.add_subparsers(dest="command")
    new = sub.add_parser("frobnicate", help="a command added later")
    new.add_argument("--level", choices=("a", "b"), metavar="L", help="how much")
    text = docgen.cli_reference(parser)
    assert "``kbrules frobnicate``" in text and "A command added later." in text
    assert "``--level L``" in text and "how much (one of: a, b)" in text


def test_vocabulary_reference_covers_every_fact_and_operation() -> None:
    from engine.ops import OPS, describe
    from engine.subjects import FINDING_FIELDS, KINDS

    facts = docgen.facts_reference()
    for kind in KINDS.values():
        assert f"``subject: {kind.name}``" in facts
        for fact in kind.facts:
            assert f"- ``{fact.name}`` ({describe(fact.types)}): " in facts, (kind.name, fact.name)
    for field in FINDING_FIELDS:
        assert f"``{{{field.name}}}``" in facts
    operations = docgen.ops_reference()
    for name in ["field", *OPS]:
        assert f"- ``{{{name}: " in operations, name


def test_vocabulary_reference_follows_the_tables() -> None:
    from engine.ops import Op
    from engine.subjects import Fact, Kind

    size = Fact("size", frozenset({"integer"}), "how *big* it is", lambda c: 0, "0")
    name = Fact("filename", frozenset({"string"}), "its name", lambda c: "", '""')
    text = docgen.facts_reference({"disk": Kind("disk", "each disk", (size,), None)}, (name,))
    assert "``subject: disk``: each disk" in text and "- ``size`` (integer): how \\*big\\* it is" in text
    assert "``{filename}``: of the layer the finding is about" in text
    odd = Op("odd", "true for an odd number", 1, "condition", frozenset({"boolean"}),
             lambda a: a % 2 == 1, lambda t: f"({t[0]} % 2 == 1)")
    some = Op("some", "true when one is", 0, "condition", frozenset({"boolean"}), lambda *a: any(a), lambda t: "")
    text = docgen.ops_reference({"odd": odd, "some": some})
    assert "- ``{odd: A}``: true for an odd number" in text
    assert "- ``{some: [A, B, ...]}``: true when one is" in text


def test_escape_keeps_text_as_it_is() -> None:
    assert docgen.escape("a *b* `c` d_ |e| \\") == "a \\*b\\* \\`c\\` d\\_ \\|e\\| \\\\"
    assert docgen.escape("- not a list") == "\\- not a list"


# The harness -----------------------------------------------------------------------------

def test_output_comparison() -> None:
    h = _harness()
    assert h.compare('{"a": 1, "b": [true]}', '{"b":[true],"a":1}') is None  # values, not layout
    assert h.compare('{"a": 1}', '{"a": 1.5}') is not None
    assert h.compare('{"a": 1}', '{"a": true}') is not None  # no bool/int confusion
    assert h.compare('{"a": 1}\nexit 1', '{"a":1}\nexit 1\n') is None  # JSON, then text
    assert h.compare('{"a": 1}\nexit 1', '{"a":1}\nexit 2') is not None
    assert h.compare('"x"\n"y"', '"x"\n"y"\n') is None  # a stream of values
    assert h.compare('{"s": <size>}', '{"s": 208896}') is None
    assert h.compare('{"s": <size>}', '{"s": "big"}') is not None
    assert h.compare('{"s": "<size>"}', '{"s": 1}') is not None  # only a bare <size>
    assert h.compare("disk size: <size>", "disk size: 204 KiB") is None
    assert h.compare("end offset: <size>", "end offset: 589824") is None
    assert h.compare("end offset: <size>", "end offset: unknown") is not None
    assert h.compare("end offset: <size>\nexit 2", "end offset: 393216\nexit 2") is None  # text goes on
    assert h.compare('{"s": <size>}\noffset: <size>\nexit 1', '{"s": 1}\noffset: 2 KiB\nexit 1') is None
    assert h.compare("a  \n\nb", "a\n\nb   \n") is None  # spaces at line ends
    assert h.compare("a\nb", "a\n\nb") is not None  # but not blank lines inside


def _article_commands(path: Path) -> tuple[int, int]:
    """(console commands, Python examples) that the harness finds in an article."""
    from sybil import Document

    h = _harness()
    document = Document.parse(str(path), h.parse_console, h.PythonSessions())
    examples = list(document.examples())
    return (sum(isinstance(e.parsed, h.Command) for e in examples),
            sum(isinstance(e.region.evaluator, h.InArticleDir) for e in examples))


@pytest.mark.parametrize("page", LIVE_PAGES, ids=[p.stem for p in LIVE_PAGES])
def test_article_has_live_examples(page: Path) -> None:
    commands, python = _article_commands(page)
    assert commands >= 8, (commands, python)
    if page.parent == ARTICLES:  # an article also shows kbrules as a library
        assert python >= 1, (commands, python)


@pytest.mark.parametrize("page", LIVE_PAGES, ids=[p.stem for p in LIVE_PAGES])
def test_the_harness_runs_every_live_page(page: Path) -> None:
    # Sybil collects a page when its path, relative to docs/, matches one of PAGES.
    relative = page.relative_to(ROOT / "docs")
    assert any(relative.match(pattern) for pattern in _harness().PAGES), relative


def test_contributing_page_lists_the_vocabulary_from_the_code() -> None:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    assert ".. kbrules-facts::" in text and ".. kbrules-ops::" in text
    assert "kbrules test my-rules.yaml" in text and "kbrules jq --rules my-rules.yaml" in text


def _run_copy(tmp_path: Path, change: tuple[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run a copy of the article, with one expected output changed, the way CI runs it,
    stopping at the first failure; every temp file goes to a directory of our own."""
    text = (ARTICLES / "incremental-backup.rst").read_text(encoding="utf-8")
    old, new = change
    assert text.count(old) == 1, old
    (tmp_path / "docs" / "kbase").mkdir(parents=True)
    (tmp_path / "docs" / "kbase" / "incremental-backup.rst").write_text(text.replace(old, new))
    shutil.copy(HARNESS, tmp_path / "docs" / "conftest.py")
    temp = tmp_path / "temp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:doctest",
         "docs/kbase/incremental-backup.rst"],
        cwd=tmp_path, env={**os.environ, "TMPDIR": str(temp)}, capture_output=True, text=True,
        timeout=300)
    return done, temp


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


CHANGES = {
    # One value in a JSON output.
    "json": ('   $ qemu-img info --output=json base.qcow2 \\\n'
             '   >   | jq -c \'.["format-specific"].data.bitmaps // [] | .[]\'\n'
             '   {"flags":["auto"],"name":"daily","granularity":65536}',
             '   $ qemu-img info --output=json base.qcow2 \\\n'
             '   >   | jq -c \'.["format-specific"].data.bitmaps // [] | .[]\'\n'
             '   {"flags":["auto"],"name":"daily","granularity":65537}'),
    # One word in a text output.
    "text": ("   daily   yes    -                   -      -\n\n   1 bitmap checked: 1 valid, 0 not valid\n\n\n"
             "Breaking the chain",
             "   daily   NO     -                   -      -\n\n   1 bitmap checked: 1 valid, 0 not valid\n\n\n"
             "Breaking the chain"),
    # An exit status the article no longer shows.
    "exit": ('   $ kbrules check mid.qcow2 --bitmap daily; echo "exit $?"',
             "   $ kbrules check mid.qcow2 --bitmap daily"),
}


@pytest.mark.parametrize("kind", CHANGES)
def test_a_changed_output_fails_the_run(tmp_path: Path, kind: str) -> None:
    done, temp = _run_copy(tmp_path, CHANGES[kind])
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed" in out and "passed" in out, out
    changed = (tmp_path / "docs" / "kbase" / "incremental-backup.rst").read_text()
    command = CHANGES[kind][1].splitlines()[0]
    failing = _line_of(changed, command.strip()) if kind != "text" else None
    if failing:
        assert f"incremental-backup.rst::line:{failing}," in out, out
    assert {"json": "65537", "text": "-daily   NO", "exit": "exited 1"}[kind] in out, out
    assert not list(temp.iterdir()), "the article left files behind"


def test_a_failure_while_a_server_runs_leaves_nothing_behind(tmp_path: Path) -> None:
    # Fail right after qemu-nbd started: the harness must stop it and remove everything.
    change = ('   {"name":"daily","flags":["in-use","auto"]}\n\nkbrules refuses',
              '   {"name":"daily","flags":["auto"]}\n\nkbrules refuses')
    done, temp = _run_copy(tmp_path, change)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "1 failed" in out, out
    assert not list(temp.iterdir()), "the article left files behind"
    assert not _processes_under(temp), "the article left a process running"


def _processes_under(directory: Path) -> Optional[list[int]]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(int(pid))
    return found


# What the articles say about the report, held to the code --------------------------------

def test_rule_texts_use_only_markup_both_renderers_know() -> None:
    """A rule's texts are read as reStructuredText by the docs and as plain text by
    kbrules explain and the report: ``literal`` is the one markup both can show (in a
    message or remediation: a command). Anything else would show raw somewhere."""
    for path in RULE_FILES:
        for rule in load_rules([path]):
            remediations = [(f"remediation ({a})", t.text) for a, t in rule.remediation.items()]
            for what, text in (("title", rule.title), ("statement", rule.statement),
                               ("message", rule.message.text), *remediations):
                assert text.count("``") % 2 == 0, (rule.id, what)
                outside = re.sub(r"``.*?``", "", text, flags=re.S)
                assert not re.search(r"[`*|]|:\w+:|\w_\b|\[\d+\]_", outside), (rule.id, what, outside)
            # A command ends its sentence, so that it can stand on a line of its own.
            for template in rule.remediation.values():
                pieces = template.pieces()
                for piece, command in pieces:
                    assert not command or "\n" not in piece.strip(), (rule.id, piece)
                after = [p for p, c in zip(pieces[1:], pieces) if c[1]]
                assert all(p[0] == "" or p[0][0] in ". " for p in after), (rule.id, after)


def test_articles_describe_the_picture_as_drawn() -> None:
    """The articles' words about the report name what the code draws: every state a
    copy can be in, the marks, and the table's column names; and what image-health
    says of the FIRST FAILING RULE column (errors only) is what the table does."""
    from builders import bitmap, layer
    from engine import draw, picture
    from engine.evaluate import evaluate
    from engine.normalize import normalize

    text = (ARTICLES / "incremental-backup.rst").read_text(encoding="utf-8")
    for state in picture.STATES:
        shown = draw.GLYPHS[True]["absent"] if state == "absent" else state
        assert f"``{shown}``" in text, state
    assert f"``{draw.GLYPHS[True]['error']}`` (an error)" in text
    assert f"``{draw.GLYPHS[True]['warning']}`` (a warning)" in text
    health = (ARTICLES / "image-health.rst").read_text(encoding="utf-8")
    for severity in draw.MARK_DOC:
        assert f"``{draw.GLYPHS[True][severity]}``" in health, severity
    columns = set(draw.CHAIN_HEADERS) | set(draw.BITMAP_HEADERS)
    named = [name for page in ARTICLE_FILES
             for name in re.findall(r"table's ``([A-Z][A-Z ]+)``", " ".join(page.read_text().split()))]
    assert named and set(named) <= columns, named
    # "The table's FIRST FAILING RULE column names errors only, so it shows - here".
    assert "column names errors only, so it shows ``-`` here" in " ".join(health.split())
    chain = [layer("top.qcow2", [bitmap("a", "auto", granularity=65536)], "base.qcow2"),
             layer("base.qcow2", [bitmap("a", "auto", granularity=1048576)])]
    report = evaluate(normalize(chain, "test"), load_rules())
    assert [f.severity for f in report.bitmaps[0].findings] == ["warning"]
    row = next(line for line in draw.report_text(report).splitlines() if line.startswith("a "))
    assert row.split() == ["a", "yes", "-", "-", "-"]
