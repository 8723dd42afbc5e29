"""The rule files: their own examples pass, and broken rule files give errors that
name the file, the line and the rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.errors import RulesError
from engine.examples import check_example
from engine.rules import Template, default_files, load, load_all, sh_quote

RULES = load_all()
EXAMPLES = [(r, e, i + 1) for r in RULES for i, e in enumerate(r.examples)]

IDS = {"bitmap-in-top", "bitmap-contiguous", "bitmap-recording", "bitmap-consistent",
       "bitmap-persistent"}


def test_stable_ids_exist() -> None:
    assert IDS <= {r.id for r in RULES}


def test_rules_ship_in_rules_dir() -> None:
    assert [p.name for p in default_files()] == ["incremental-backup.yaml"]


@pytest.mark.parametrize("rule, example, number", EXAMPLES,
                         ids=[f"{r.id}-{e.expect}-{i}" for r, e, i in EXAMPLES])
def test_rule_example(rule, example, number) -> None:
    assert check_example(rule, example, number) is None


def test_a_wrong_example_is_caught() -> None:
    # The example runner must be able to fail: flip one example's expectation.
    rule = next(r for r in RULES if r.id == "bitmap-recording")
    passing = next(e for e in rule.examples if e.expect == "pass")
    from dataclasses import replace
    problem = check_example(rule, replace(passing, expect="fail"), 1)
    assert problem is not None and "expected a finding, got none" in problem


GOOD = """\
article: demo
title: Demo
rules:
  - id: demo-rule
    title: Copies record
    severity: error
    subject: copy
    require: {field: recording}
    statement: Every copy records.
    message: "bitmap {name} stopped in layer {layer} ({filename})"
    remediation: "qemu-img bitmap --remove {filename|sh} {name|sh}"
    examples:
      - expect: pass
        bitmap: a
        input: {filename: t.qcow2, format: qcow2, format-specific: {type: qcow2, data: {bitmaps: [{name: a, flags: [auto]}]}}}
      - expect: fail
        bitmap: a
        layers: [0]
        input: {filename: t.qcow2, format: qcow2, format-specific: {type: qcow2, data: {bitmaps: [{name: a, flags: []}]}}}
"""


def _load(tmp_path: Path, text: str) -> list:
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return load(path)


def test_good_file_loads(tmp_path: Path) -> None:
    (rule,) = _load(tmp_path, GOOD)
    assert rule.id == "demo-rule" and rule.article == "demo"
    assert all(check_example(rule, e, i) is None for i, e in enumerate(rule.examples, 1))


@pytest.mark.parametrize("old, new, expected", [
    ("require: {field: recording}", "require: {frobnicate: recording}", r"demo.yaml:8: rule demo-rule: .*require"),
    ("require: {field: recording}", "require: {field: colour}", r"demo.yaml:8: rule demo-rule: unknown fact 'colour'"),
    ("message: \"bitmap {name}", "message: \"bitmap {nam}", r"demo.yaml:10: rule demo-rule: message names unknown field '\{nam\}'"),
    ("{filename|sh}", "{filename|upper}", r"demo.yaml:11: rule demo-rule: remediation: .*unknown filter"),
    ("    severity: error\n", "    severity: fatal\n", r"demo.yaml:6: rule demo-rule: rules.0.severity: 'fatal' is not one of"),
    ("    title: Copies record\n", "", r"demo.yaml:4: rule demo-rule: rules.0: 'title' is a required property"),
    ("subject: copy", "subject: bitmap", r"demo.yaml:4: rule demo-rule: subject 'bitmap' has no 'layer' fact"),
    ("subject: copy", "subject: bitmap\n    at: 0", r"demo.yaml:9: rule demo-rule: unknown fact 'recording'"),
    ("      - expect: pass\n", "      - expect: fail\n", r"rule demo-rule: needs at least one passing and one failing"),
    ("rules:\n", "rules: [\n", r"demo.yaml:\d+: not valid YAML"),
])
def test_broken_file_names_file_line_and_rule(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(RulesError, match=expected):
        _load(tmp_path, GOOD.replace(old, new, 1))


def test_duplicate_id(tmp_path: Path) -> None:
    rule = GOOD[GOOD.index("  - id"):]
    with pytest.raises(RulesError, match=r"demo.yaml:\d+: rule demo-rule: duplicate id"):
        _load(tmp_path, GOOD + rule)


def test_template_render_and_quote() -> None:
    t = Template.parse("rm {name|sh} at {layer} {{literal}}")
    assert t.fields() == ["name", "layer"]
    assert t.render({"name": "it's", "layer": 2}) == "rm 'it'\\''s' at 2 {literal}"
    assert sh_quote("a b") == "'a b'"
    assert Template.parse("{x}").render({"x": None}) == "null"
    assert Template.parse("{x}").render({"x": True}) == "true"
